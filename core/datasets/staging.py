"""Staging an export: a hidden owned folder beside OUT, renamed into place when complete.

Everything is written into a hidden ``.OUT.partial-*`` folder beside OUT (carrying
CaptionDesk's owner marker, :mod:`core.ownership`) and renamed onto OUT only after fsync,
so a cancelled, failed or killed export never leaves a half dataset at OUT.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from core import ownership
from core.datasets.errors import ExportError

#: Written into every export: how it was made (and the mark that allows --overwrite).
MANIFEST_NAME = "captiondesk_export.json"
#: A marked partial folder untouched for this long belongs to a killed export (when its
#: owner cannot be asked: another machine, or not POSIX).
STALE_PARTIAL_SECONDS = ownership.STALE_SECONDS
#: The owner marker's job name for export staging folders.
EXPORT_JOB = "export"
#: Files in an earlier export that the user added or changed, listed when refusing.
SHOWN_USER_FILES = 5


def _fsync(path: Path, *, directory: bool = False) -> None:
    if directory:
        try:  # directories cannot be opened for fsync on Windows: best effort there
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            return
    else:
        fd = os.open(path, os.O_RDWR)  # Windows cannot flush a read-only descriptor
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _files_changed_since(out: Path, manifest: Path) -> list[str]:
    """Files under *out* added or changed after its export finished (the manifest is
    written last; ctime cannot be set back by copying tools)."""
    try:
        info = manifest.stat()
    except OSError:
        return []
    finished = max(info.st_ctime_ns, info.st_mtime_ns)
    changed = []
    for folder, _dirs, files in os.walk(out):
        for name in files:
            path = Path(folder) / name
            if path == manifest:
                continue
            try:
                stamp = path.lstat()
            except OSError:
                continue
            if max(stamp.st_ctime_ns, stamp.st_mtime_ns) > finished:
                changed.append(path.relative_to(out).as_posix())
    return sorted(changed)


class Staging:
    """A hidden folder beside OUT, renamed onto OUT when the dataset is complete."""

    def __init__(self, out: Path, *, overwrite: bool) -> None:
        self.out = out
        self.replaces_existing = False
        if out.exists() or out.is_symlink():
            if not out.is_dir() or out.is_symlink():
                raise ExportError(f"{out} exists and is a file or a link; choose a new folder")
            if any(out.iterdir()):
                if not (out / MANIFEST_NAME).is_file():
                    raise ExportError(
                        f"{out} exists and is not a CaptionDesk export; choose a new folder"
                    )
                if not overwrite:
                    raise ExportError(f"{out} already holds an export; pass --overwrite to replace it")
                user_files = _files_changed_since(out, out / MANIFEST_NAME)
                if user_files:
                    listed = ", ".join(user_files[:SHOWN_USER_FILES])
                    more = f" and {len(user_files) - SHOWN_USER_FILES} more" if len(user_files) > SHOWN_USER_FILES else ""
                    raise ExportError(
                        f"{out} holds {len(user_files)} files added or changed after the export "
                        f"({listed}{more}); --overwrite would delete them. Move them out or choose a new folder"
                    )
                self.replaces_existing = True
        self._remove_stale_leftovers()
        # os.mkdir, not mkdtemp: the dataset keeps the user's umask, not mode 0700.
        # The owner marker lets a later export remove it as soon as this process is gone.
        self.path = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:12]}"
        try:
            ownership.make_owned_dir(self.path, EXPORT_JOB)
        except OSError as exc:
            raise ExportError(f"cannot create {out}: {exc.strerror or exc}") from None

    def _remove_stale_leftovers(self) -> None:
        """Partial folders of a killed export to this OUT (and old data of a killed swap): marked ones only."""
        ownership.remove_abandoned(self.out.parent, (f".{self.out.name}.partial-*", f".{self.out.name}.old-*"),
                                   EXPORT_JOB)

    def commit(self) -> None:
        """fsync everything, then rename into place (replacing an earlier export)."""
        ownership.unmark(self.path)
        for folder, _dirs, files in os.walk(self.path, topdown=False):
            for name in files:
                _fsync(Path(folder) / name)
            _fsync(Path(folder), directory=True)
        old: Path | None = None
        if self.out.exists():
            if self.replaces_existing:
                # Inside a marked folder: a killed swap's old data is recognisably CaptionDesk's.
                old = ownership.make_owned_dir(self.out.parent / f".{self.out.name}.old-{uuid.uuid4().hex[:12]}",
                                               EXPORT_JOB)
                os.replace(self.out, old / self.out.name)
            else:
                self.out.rmdir()  # empty (checked at the start); rename cannot replace it on Windows
        os.replace(self.path, self.out)
        _fsync(self.out.parent, directory=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
