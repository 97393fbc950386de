"""Folders CaptionDesk makes for its own use, marked so that only those are ever cleaned up.

A temporary or partial folder (an export being written, the old data of a swap, a
version being saved, a training run's state) gets a small marker file,
:data:`MARKER_NAME`, naming CaptionDesk, the job, and the process and machine that made
it.  Cleanup code removes a folder only when it carries that marker and its owner is
gone (:func:`abandoned`): a folder a person made, whatever its name, is never touched.

The owner counts as gone when the marker names a process of this machine that no longer
runs (POSIX only: ``os.kill(pid, 0)`` would end the process on Windows), or otherwise once
the folder has been untouched for :data:`STALE_SECONDS`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import zlib
from pathlib import Path
from typing import Any

__all__ = [
    "MARKER_NAME",
    "STALE_SECONDS",
    "abandoned",
    "host_tag",
    "make_owned_dir",
    "mark",
    "owner",
    "remove_abandoned",
    "unmark",
]

#: The marker file inside an owned folder (removed before the folder becomes a result).
MARKER_NAME = ".captiondesk-owner.json"
#: An owned folder untouched this long is abandoned even when its owner cannot be asked.
STALE_SECONDS = 3600.0
_APP = "CaptionDesk"


def host_tag() -> str:
    """A short tag of this machine: a marker's process id means something only here."""
    return f"{zlib.crc32(socket.gethostname().encode('utf-8', 'replace')):08x}"


def mark(folder: Path, job: str) -> None:
    """Write the owner marker into the existing *folder*."""
    record = {"app": _APP, "job": job, "pid": os.getpid(), "host": host_tag(), "created": time.time()}
    (folder / MARKER_NAME).write_text(json.dumps(record), encoding="utf-8")


def make_owned_dir(folder: Path, job: str, *, exist_ok: bool = False) -> Path:
    """Create *folder* (parents too) and mark it as this process's, for *job*."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.mkdir(exist_ok=exist_ok)
    mark(folder, job)
    return folder


def unmark(folder: Path) -> None:
    """Remove the marker (the folder is about to become a result, e.g. the export itself)."""
    (folder / MARKER_NAME).unlink(missing_ok=True)


def owner(folder: Path) -> dict[str, Any] | None:
    """The marker's record when *folder* is a CaptionDesk folder, else None (a person's, or unreadable)."""
    try:
        marker = folder / MARKER_NAME
        if folder.is_symlink() or not folder.is_dir() or marker.is_symlink():
            return None
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("app") != _APP:
        return None
    return record


def _process_gone(record: dict[str, Any]) -> bool:
    pid = record.get("pid")
    if os.name != "posix" or record.get("host") != host_tag() or not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, owned by another user
        return False
    return False


def _newest_mtime(folder: Path) -> float:
    newest = folder.stat().st_mtime
    for child in folder.iterdir():
        try:
            newest = max(newest, child.stat().st_mtime)
        except OSError:
            continue
    return newest


def abandoned(folder: Path, job: str | None = None, *, now: float | None = None) -> bool:
    """Whether *folder* is a CaptionDesk folder (of *job*, if given) whose owner is gone."""
    record = owner(folder)
    if record is None or (job is not None and record.get("job") != job):
        return False
    if _process_gone(record):
        return True
    try:
        return (now if now is not None else time.time()) - _newest_mtime(folder) > STALE_SECONDS
    except OSError:
        return False


def remove_abandoned(parent: Path, patterns: tuple[str, ...], job: str | None = None) -> list[Path]:
    """Remove the abandoned CaptionDesk folders in *parent* matching *patterns*; the removed ones."""
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    now = time.time()
    for pattern in patterns:
        for leftover in parent.glob(pattern):
            if abandoned(leftover, job, now=now):
                shutil.rmtree(leftover, ignore_errors=True)
                removed.append(leftover)
    return removed
