"""Bring a library file's schema up to date, safely.

Run on every open (:func:`upgrade`):

1. A file whose revision this build does not know was written by a newer CaptionDesk:
   refuse with a clear message instead of guessing.
2. Before touching an existing library, copy it with SQLite's online backup API to
   ``<name>.backup-<from-revision>-<timestamp>.db`` beside it.
3. Migrate on a connection with ``foreign_keys=OFF`` inside one ``BEGIN IMMEDIATE``
   transaction: table rebuilds (SQLite's only way to alter) would otherwise
   cascade-delete child rows.  ``PRAGMA foreign_key_check`` must come back empty before
   the transaction commits; otherwise it rolls back and the library is unchanged.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import UserFacingError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: The newest revision in ``migrations/versions`` (a test keeps it equal to Alembic's
#: head).  Opening an up-to-date library compares against it with plain sqlite3, so the
#: common case never imports Alembic (a visible part of the desktop app's start-up).
HEAD_REVISION = "0009"


class LibraryOpenError(UserFacingError):
    """The file cannot be used as a CaptionDesk library (the message says why)."""


class NewerLibraryError(LibraryOpenError):
    """The library was written by a newer CaptionDesk."""


@dataclass(frozen=True)
class MigrationResult:
    from_revision: str | None
    to_revision: str
    backup: Path | None


def _alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def _current_revision(path: Path) -> tuple[str | None, bool]:
    """The file's Alembic revision, and whether it holds any tables at all."""
    from alembic.runtime.migration import MigrationContext

    from core.db import make_engine

    engine = make_engine(path, foreign_keys=False, pool=False)
    try:
        with engine.connect() as conn:
            tables = {
                row[0]
                for row in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")
            }
            revision = MigrationContext.configure(conn).get_current_revision()
    except Exception as exc:  # sqlite3.DatabaseError: "file is not a database", etc.
        from core.db import explain_database_error

        # A full disk, a read-only folder or a damaged file is not "not a library".
        cause = exc.__cause__ or exc
        explained = explain_database_error(path, exc)
        if explained is not None and "file is not a database" not in str(cause):
            raise LibraryOpenError(explained) from exc
        raise LibraryOpenError(f"{path} is not a CaptionDesk library ({cause})") from exc
    finally:
        engine.dispose()
    return revision, bool(tables)


def _stored_revision(path: Path) -> str | None:
    """The revision in an existing library's ``alembic_version`` table, read-only; None if unsure."""
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return None  # not a library, locked, damaged...: the full path says what is wrong
    finally:
        conn.close()
    return rows[0][0] if len(rows) == 1 else None


def backup_database(path: Path, label: str) -> Path:
    """Copy *path* to a timestamped backup beside it using SQLite's online backup."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    target = path.with_name(f"{path.stem}.backup-{label}-{stamp}{path.suffix or '.db'}")
    source = sqlite3.connect(path)
    try:
        dest = sqlite3.connect(target)
        try:
            source.backup(dest)
        finally:
            dest.close()
    finally:
        source.close()
    return target


def upgrade(path: Path | str, *, target: str = "head") -> MigrationResult:
    """Migrate the library at *path* (created if absent) to *target*."""
    path = Path(path)
    if target == "head" and _stored_revision(path) == HEAD_REVISION:
        return MigrationResult(HEAD_REVISION, HEAD_REVISION, None)
    from alembic import command
    from alembic.script import ScriptDirectory

    from core.db import make_engine

    script = ScriptDirectory.from_config(_alembic_config())
    head = script.get_current_head()
    assert head is not None
    known = {rev.revision for rev in script.walk_revisions()}
    current, has_tables = _current_revision(path)

    if current is not None and current not in known:
        raise NewerLibraryError(
            f"{path} was written by a newer version of CaptionDesk (schema revision "
            f"{current!r}; this version knows up to {head!r}). Upgrade CaptionDesk to open it."
        )
    if current is None and has_tables:
        raise LibraryOpenError(
            f"{path} is an SQLite database but not a CaptionDesk library; "
            "choose another file name for the library."
        )
    wanted = head if target == "head" else target
    if current == wanted:
        return MigrationResult(current, wanted, None)

    backup = backup_database(path, current) if current is not None else None
    engine = make_engine(path, foreign_keys=False, pool=False)
    try:
        with engine.execution_options(captiondesk_begin="IMMEDIATE").begin() as conn:
            cfg = _alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, target)
            problems = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if problems:
                # Raising inside the transaction rolls the whole upgrade back.
                raise LibraryOpenError(
                    f"migrating {path} would break {len(problems)} references "
                    f"(first: {problems[0]}); the library was left unchanged"
                )
    finally:
        engine.dispose()
    return MigrationResult(current, wanted, backup)
