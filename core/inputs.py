"""What every reader of a user's files shares: regular files only, names compared alike.

* :func:`open_regular` opens a file for reading only when it is a regular file: a FIFO
  named ``metadata.jsonl`` (or a device, a socket) is refused at once with
  :class:`NotARegularFile` instead of blocking the reader forever.  It is an ``OSError``,
  so every ``except OSError`` that reports "cannot read PATH (...)" names it in one line.
* :func:`regular_file_problem` is the same check for code that hands a path to another
  library (exiv2, pyarrow, Pillow) instead of opening it itself.
* :func:`name_key` is the form file names are compared in: NFC, so ``café.jpg`` typed on
  Linux (NFC) and the same name written by macOS (NFD) are one name.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from pathlib import Path
from typing import IO, Any

__all__ = ["NotARegularFile", "describe_mode", "name_key", "open_regular", "regular_file_problem", "regular_file_refusal"]


class NotARegularFile(OSError):
    """A FIFO, device, socket or folder where a file to read was expected."""


def describe_mode(mode: int) -> str:
    """What a non-regular file is, for messages ("a FIFO (named pipe)", "a device"...)."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def regular_file_refusal(mode: int) -> str:
    """Why a file of *mode* is not read ("a FIFO (named pipe), not a regular file")."""
    what = describe_mode(mode)
    return f"{what}, not a regular file" if what != "not a regular file" else what


def _refusal(mode: int) -> NotARegularFile:
    return NotARegularFile(regular_file_refusal(mode))


def regular_file_problem(path: Path | str) -> str | None:
    """None when *path* (links followed) is a regular file, else why it must not be read.

    Raises ``OSError`` when *path* cannot be looked at (missing, no permission).
    """
    mode = os.stat(path).st_mode
    return None if stat.S_ISREG(mode) else str(_refusal(mode))


def open_regular(path: Path | str, mode: str = "r", **kwargs: Any) -> IO[Any]:
    """``open(path, mode, **kwargs)`` for reading, refusing anything but a regular file.

    The file is opened non-blocking and checked with ``fstat`` on the open descriptor, so
    neither a FIFO nor a file swapped for one between a check and the open can block.
    """
    if any(flag in mode for flag in "wax+"):
        raise ValueError("open_regular only reads")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        file_mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(file_mode):
            raise _refusal(file_mode)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # ordinary reads from here on
        return open(fd, mode, closefd=True, **kwargs)  # noqa: SIM115 - the caller closes it
    except BaseException:
        os.close(fd)
        raise


def name_key(name: str) -> str:
    """*name* in the form names are compared in (Unicode NFC)."""
    return name if name.isascii() else unicodedata.normalize("NFC", name)
