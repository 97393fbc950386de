"""A CaptionDesk library: one SQLite file, its folders, and the jobs that run on it.

:class:`Library` is the entry point the CLI and the GUI share.  Opening one migrates the
schema (with a backup first, see :mod:`core.migrate`) and marks jobs that were still
"running" — their process died — as interrupted, so they can be resumed.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from platformdirs import user_data_path
from sqlalchemy import delete, select, update

from core import APP_NAME
from core.db import Database
from core.errors import UserFacingError
from core.filenames import to_os, to_stored
from core.jobs import NEVER_CANCELLED, CancelToken, JobRun, JobStats, ProgressCallback, S, no_progress
from core.migrate import HEAD_REVISION, LibraryOpenError, MigrationResult, upgrade
from core.models import Image, Job, JobState, LibraryRoot, utcnow

if TYPE_CHECKING:
    from core.scanner import ScanStats  # imported when scanning: keeps this module light

ENV_LIBRARY = "CAPTIONDESK_LIBRARY"


class LibraryError(UserFacingError):
    """A user-level problem with a library operation (the message says what to do)."""


def default_library_path() -> Path:
    """``$CAPTIONDESK_LIBRARY``, else ``library.db`` in the user's data folder."""
    env = os.environ.get(ENV_LIBRARY)
    if env:
        return Path(env).expanduser()
    return user_data_path(APP_NAME, appauthor=False) / "library.db"


@dataclass(frozen=True)
class RootStatus:
    root_id: int
    path: str
    images: int = 0
    uncaptioned: int = 0
    model: int = 0
    human: int = 0
    imported: int = 0
    #: Captioned before their picture changed at the same path (the caption is in history).
    changed: int = 0
    missing: int = 0
    errors: int = 0


class Library:
    """An open library file.  Thread-safe: every method uses its own short session."""

    def __init__(self, path: Path | str, *, cache_dir: Path | None = None, read_only: bool | None = False) -> None:
        """Open (create, migrate) the library at *path*.

        *read_only*: True only reads the file (no migration, no job records; writes
        raise :class:`core.db.ReadOnlyLibraryError`); None decides by access: a library
        whose file or folder cannot be written is opened read-only (reading commands).
        """
        self.path = Path(path).expanduser().absolute()
        if self.path.is_dir():
            raise LibraryOpenError(f"{self.path} is a folder; give the path of a library file")
        if self.path.exists() and not self.path.is_file():
            raise LibraryOpenError(f"{self.path} is not a regular file (a device or pipe); give the path of a library file")
        if read_only is None:
            read_only = self.path.exists() and not (
                os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)
            )
        self.read_only = read_only
        self.cache_dir = cache_dir or self.path.with_name(self.path.stem + ".cache")
        if read_only:
            self.migration = MigrationResult(HEAD_REVISION, HEAD_REVISION, None)
            self.db = Database(self.path, read_only=True)
            self._check_read_only_revision()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LibraryOpenError(f"cannot create {self.path.parent}: {exc.strerror or exc}") from None
        self.migration = upgrade(self.path)
        self.db = Database(self.path)
        self._mark_interrupted_jobs()

    def _check_read_only_revision(self) -> None:
        """A read-only library must already be in this version's format (it cannot be migrated)."""
        from sqlalchemy.exc import DBAPIError

        from core.db import explain_database_error

        try:
            with self.db.read() as session:
                revision = session.connection().exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        except DBAPIError as exc:
            self.db.close()
            if "no such table" in str(exc):
                raise LibraryOpenError(f"{self.path} is not a CaptionDesk library") from None
            raise LibraryOpenError(explain_database_error(self.path, exc) or f"cannot read {self.path}: {exc.orig}") from None
        if revision != HEAD_REVISION:
            self.db.close()
            raise LibraryOpenError(
                f"{self.path} is read-only and in another version's format (schema {revision!r}, this version "
                f"uses {HEAD_REVISION!r}); open it once with write access to upgrade it"
            )

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- roots ---------------------------------------------------------------------

    def add_root(self, folder: Path | str) -> LibraryRoot:
        """Add *folder* to the library (not scanned yet).  Adding it twice is harmless."""
        path = Path(folder).expanduser()
        if not path.exists():
            raise LibraryError(f"folder not found: {path}")
        if not path.is_dir():
            raise LibraryError(f"not a folder: {path}")
        path = path.resolve()
        with self.db.write() as session:
            for root in session.scalars(select(LibraryRoot)):
                existing = Path(root.path)
                if existing == path:
                    return root
                if path.is_relative_to(existing):
                    raise LibraryError(f"{path} is already in the library, inside {existing}")
                if existing.is_relative_to(path):
                    raise LibraryError(
                        f"{path} contains the library folder {existing}; remove that one first"
                    )
            root = LibraryRoot(path=to_stored(str(path)))
            session.add(root)
            session.flush()
            return root

    def roots(self) -> list[LibraryRoot]:
        with self.db.read() as session:
            return list(session.scalars(select(LibraryRoot).order_by(LibraryRoot.path)))

    def find_root(self, folder: Path | str) -> LibraryRoot:
        """The root that is exactly *folder* (not a sub-folder of one)."""
        from core.queries import FolderNotInLibraryError, resolve_folder

        with self.db.read() as session:
            try:
                scope = resolve_folder(session, folder)
            except FolderNotInLibraryError:
                scope = None
            if scope is not None and not scope.prefix:
                return session.get_one(LibraryRoot, scope.root_id)
        raise LibraryError(f"{Path(folder).expanduser().resolve()} is not a library folder (add it first)")

    def remove_root(self, root_id: int) -> None:
        """Forget a folder and its images' records and captions (files are untouched)."""
        with self.db.write() as session:
            session.execute(delete(LibraryRoot).where(LibraryRoot.id == root_id))

    def image_path(self, image: Image) -> Path:
        root = image.root if "root" in image.__dict__ else None
        if root is None:
            with self.db.read() as session:
                root_path = session.scalar(
                    select(LibraryRoot.path).where(LibraryRoot.id == image.root_id)
                )
        else:
            root_path = root.path
        return Path(to_os(root_path)) / to_os(image.rel_path)

    # -- scanning ------------------------------------------------------------------

    def scan(
        self,
        root_ids: list[int] | None = None,
        *,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken = NEVER_CANCELLED,
    ) -> ScanStats:
        from core.scanner import scan

        with self.job("scan", {"root_ids": root_ids}) as run:
            # The scanner reports its own progress (it runs without a library, too).
            run.stats = scan(self.db, root_ids, progress=progress, cancel=cancel, exclude=self.own_paths())
            run.done = run.stats.files_seen
        return run.stats

    def own_paths(self) -> list[Path]:
        """The files and folders this library keeps beside its file: the file and its SQLite
        companions, the thumbnail cache, the models folder (versions, training runs and their
        partial folders).  A scan never takes them for photos."""
        companions = [self.path.with_name(self.path.name + suffix) for suffix in ("-wal", "-shm", "-journal")]
        return [self.path, *companions, self.cache_dir, self.models_dir]

    @property
    def models_dir(self) -> Path:
        """``<library stem>.models`` beside the library file: trained versions and training runs."""
        return self.path.with_name(self.path.stem + ".models")

    def own_folder_holding(self, path: Path | str) -> Path | None:
        """The library's own folder (thumbnail cache, models folder) that *path* is or lies in, else None.

        CaptionDesk deletes in those folders (a version's folder, stale thumbnails), so an
        export written there would be lost with them.
        """
        resolved = Path(path).expanduser().resolve()
        for own in (self.cache_dir, self.models_dir):
            if resolved.is_relative_to(own.expanduser().resolve()):
                return own
        return None

    # -- status --------------------------------------------------------------------

    def status(self) -> list[RootStatus]:
        """Counts per root: images, uncaptioned, by model / human / import, changed since
        captioned, missing, errors.

        Each image counts once, in its display state (:data:`core.queries.STATE_SQL`), so
        these are the numbers the GUI's sidebar shows and they add up to ``images``.
        """
        from sqlalchemy import text

        from core.queries import STATE_SQL

        states = ("uncaptioned", "model", "verified", "imported", "changed", "missing", "error")
        sums = ", ".join(f"coalesce(sum({STATE_SQL[s]}), 0)" for s in states)
        sql = (
            f"SELECT r.id, r.path, count(i.id), {sums} FROM library_roots r"
            " LEFT JOIN images i ON i.root_id = r.id"
            " LEFT JOIN captions c ON c.image_id = i.id AND c.kind = 'caption' AND c.is_current = 1"
            " GROUP BY r.id ORDER BY r.path"
        )
        with self.db.read() as session:
            return [RootStatus(*row) for row in session.execute(text(sql))]

    # -- job records ---------------------------------------------------------------

    def _mark_interrupted_jobs(self) -> None:
        """Jobs left "running" by a process that is gone become "interrupted".

        Another live process may have the library open (the desktop app's scan child,
        a CLI run next to the window): its jobs are left alone.  Each job records its
        owner (host, pid) in ``params["_owner"]``; jobs of another host cannot be
        checked and stay as they are.
        """
        host = socket.gethostname()
        with self.db.write() as session:
            stale = [
                job_id
                for job_id, params in session.execute(
                    select(Job.id, Job.params).where(Job.state == JobState.RUNNING)
                )
                if _owner_is_gone((params or {}).get("_owner"), host)
            ]
            if stale:
                session.execute(
                    update(Job)
                    .where(Job.id.in_(stale))
                    .values(state=JobState.INTERRUPTED.value, updated_at=utcnow())
                )

    def start_job(self, kind: str, params: Mapping[str, Any] | None = None) -> int:
        if self.read_only:
            return 0  # a reading job (export) on a read-only library is not recorded
        owner = {"host": socket.gethostname(), "pid": os.getpid()}
        with self.db.write() as session:
            job = Job(kind=kind, params={**(params or {}), "_owner": owner}, state=JobState.RUNNING.value)
            session.add(job)
            session.flush()
            return job.id

    def update_job(self, job_id: int, **values: Any) -> None:
        if self.read_only and job_id == 0:
            return
        with self.db.write() as session:
            session.execute(update(Job).where(Job.id == job_id).values(**values))

    def finish_job(self, job_id: int, state: JobState, **values: Any) -> None:
        self.update_job(job_id, state=state.value, finished_at=utcnow(), **values)

    def job(
        self,
        kind: str,
        params: Mapping[str, Any] | None = None,
        stats: S | None = None,
        progress: ProgressCallback = no_progress,
    ) -> JobRun[S]:
        """Record a job and return its run, to use as ``with library.job(...) as run``.

        The run throttles *progress*, collects *stats* (a plain :class:`JobStats` when
        None) and finishes the record when the block ends: failed (with the message)
        when it raises, else cancelled or done; see :class:`core.jobs.JobRun`.
        """
        job_id = self.start_job(kind, params)
        return JobRun(self, job_id, stats if stats is not None else JobStats(), progress)  # type: ignore[arg-type]

    def jobs(self, kind: str | None = None) -> list[Job]:
        query = select(Job).order_by(Job.id)
        if kind is not None:
            query = query.where(Job.kind == kind)
        with self.db.read() as session:
            return list(session.scalars(query))


def job_owner_is_gone(params: Mapping[str, Any] | None) -> bool:
    """Whether the process that started the job with these params has certainly ended
    (False when it cannot be told: another host's job)."""
    return _owner_is_gone((params or {}).get("_owner"), socket.gethostname())


def _owner_is_gone(owner: Any, host: str) -> bool:
    """Whether the process that started a job has certainly ended."""
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return True  # written before owners were recorded
    if owner.get("host") != host:
        return False
    if owner["pid"] == os.getpid():
        return False  # this process re-opened the library: its jobs are alive
    return not _pid_alive(owner["pid"])


def _pid_alive(pid: int) -> bool:
    if sys.platform == "win32":
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        ctypes.windll.kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
