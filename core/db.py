"""SQLite engine and sessions for a CaptionDesk library.

One :class:`Database` per library file owns one SQLAlchemy engine.  Every
operation opens a short-lived session:

* :meth:`Database.read` — a deferred transaction (WAL readers never block the writer);
* :meth:`Database.write` — ``BEGIN IMMEDIATE``: the write lock is taken up front, so two
  threads that both read-then-write wait on ``busy_timeout`` instead of one failing with
  "database is locked" when it tries to upgrade its read lock (see
  docs/optimization-notes.md, "SQLite write transactions").

Python 3.11's sqlite3 module starts transactions on its own in a way SQLAlchemy cannot
steer, so the driver is put in autocommit mode (``isolation_level=None``) and the
``begin`` event emits the BEGIN statement itself (the recipe in SQLAlchemy's SQLite docs).
"""

from __future__ import annotations

import glob
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

#: How long a connection waits for another writer before giving up (milliseconds).
BUSY_TIMEOUT_MS = 30_000

_BEGIN_OPTION = "captiondesk_begin"


def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any, *, foreign_keys: bool) -> None:
    # Autocommit at the driver level: SQLAlchemy's begin event below issues BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        # NORMAL is durable across application crashes in WAL mode; only a power
        # loss can drop the last transactions, never corrupt the file.
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
    finally:
        cursor.close()


def _on_connect_read_only(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # No journal-mode change (that is a write); a read never waits long for a writer
    # in WAL mode, but a rollback-journal library may be mid-write.
    dbapi_connection.isolation_level = None
    dbapi_connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


def _on_begin(connection: Any) -> None:
    mode = connection.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")


def make_engine(path: Path | str, *, foreign_keys: bool = True, pool: bool = True) -> Engine:
    """Create an engine for the SQLite file at *path* with CaptionDesk's pragmas."""
    url = f"sqlite:///{Path(path)}"
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if not pool:
        from sqlalchemy.pool import NullPool

        kwargs["poolclass"] = NullPool
    engine = create_engine(url, **kwargs)
    event.listen(
        engine, "connect", lambda conn, rec: _on_connect(conn, rec, foreign_keys=foreign_keys)
    )
    event.listen(engine, "begin", _on_begin)
    return engine


def make_read_only_engine(path: Path | str) -> Engine:
    """An engine that only reads *path* (a library on a read-only disk or without write access).

    ``mode=ro`` needs the ``-shm`` file of a WAL library, which cannot be created in a
    read-only folder; there nobody can be writing, so the file is opened ``immutable``
    (a cleanly closed library has no ``-wal`` left; one that has is read in ``ro`` mode).
    """
    path = Path(path).absolute()
    folder_writable = os.access(path.parent, os.W_OK)
    wal = path.with_name(path.name + "-wal")
    flags = "mode=ro" if folder_writable or wal.exists() else "immutable=1"
    uri = f"{path.as_uri()}?{flags}"
    engine = create_engine(
        "sqlite://",
        creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False),
    )
    event.listen(engine, "connect", _on_connect_read_only)
    event.listen(engine, "begin", _on_begin)
    return engine


class ReadOnlyLibraryError(Exception):
    """A write was attempted on a library opened read-only."""


class Database:
    """One library file: one engine, short sessions, safe to use from several threads.

    With ``read_only`` the file is only read (no pragma that writes, no journal files);
    :meth:`write` raises :class:`ReadOnlyLibraryError`.
    """

    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.engine = make_read_only_engine(self.path) if read_only else make_engine(self.path)
        self._read_sessions = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(
            bind=self.engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"}),
            expire_on_commit=False,
        )

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read session; closing it ends the transaction (objects stay loaded, detached)."""
        session = self._read_sessions()
        try:
            yield session
        finally:
            session.close()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write session under ``BEGIN IMMEDIATE``; commits on success, rolls back on error."""
        if self.read_only:
            raise ReadOnlyLibraryError(
                f"{self.path} is read-only (no write access to the file or its folder); "
                "'status' and 'export' work, changing the library needs write access"
            )
        session = self._write_sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def integrity_check(self) -> list[str]:
        """Run ``PRAGMA integrity_check``; returns ``["ok"]`` for a healthy file."""
        with self.engine.connect() as conn:
            return [row[0] for row in conn.exec_driver_sql("PRAGMA integrity_check")]

    def close(self) -> None:
        self.engine.dispose()


def backups_of(path: Path | str) -> list[Path]:
    """The backups :mod:`core.migrate` made of the library at *path*, newest last."""
    path = Path(path)
    pattern = f"{glob.escape(path.stem)}.backup-*{glob.escape(path.suffix or '.db')}"
    return sorted(path.parent.glob(pattern), key=lambda p: p.stat().st_mtime)


def explain_database_error(path: Path | str, exc: BaseException) -> str | None:
    """One line that says what is really wrong when SQLite fails on the library at *path*.

    Returns None for errors that are not about the file, its disk or its lock (bugs).
    """
    path = Path(path).absolute()
    text = str(getattr(exc, "orig", None) or exc).lower()
    if isinstance(exc, ReadOnlyLibraryError):
        return str(exc)
    if "database or disk is full" in text or "no space left" in text:
        return (f"the disk holding {path} is full (database or disk is full); free some space and run the "
                "command again (what was committed before is kept)")
    if "readonly database" in text or "read-only" in text:
        return (f"{path} is read-only (no write access to the file or its folder); "
                "'status' and 'export' work, changing the library needs write access")
    if "malformed" in text or "file is not a database" in text or "database corrupt" in text:
        backups = backups_of(path)
        saved = (f"; backups kept by earlier upgrades: {', '.join(str(b) for b in backups)}" if backups
                 else "; there is no backup of it beside it")
        return (f"{path} is damaged ({text}){saved}; to salvage what is readable run "
                f"`sqlite3 '{path}' .recover | sqlite3 recovered.db` and use recovered.db as the library")
    if "database is locked" in text or "database is busy" in text:
        return f"{path} is busy: another process kept it locked for {BUSY_TIMEOUT_MS / 1000:g} s{_lock_holder(path)}"
    if "disk i/o error" in text:
        return f"reading or writing {path} failed with a disk I/O error; check the disk and run the command again"
    if "unable to open database file" in text:
        if path.exists() and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
            return (f"{path} is read-only (no write access to the file or its folder); "
                    "'status' and 'export' work, changing the library needs write access")
        if not os.access(path.parent, os.W_OK):
            return f"cannot create the library {path}: its folder {path.parent} is not writable"
        return f"cannot open {path} (unable to open database file)"
    return None


def _lock_holder(path: Path) -> str:
    """``" (the caption job of pid 123 on host, running since ...)"`` from the jobs table, if any."""
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=1)
        try:
            rows = conn.execute(
                "SELECT kind, params, created_at FROM jobs WHERE state = 'running' ORDER BY id DESC"
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return ""
    import json

    for kind, params, created in rows:
        try:
            owner = (json.loads(params or "{}") or {}).get("_owner") or {}
        except ValueError:
            continue
        if owner.get("pid"):
            return (f" (the {kind} job of process {owner['pid']} on {owner.get('host', '?')}, running since "
                    f"{str(created)[:19]}); wait for it to finish or stop that process")
    return "; another CaptionDesk window or command may be writing to it"
