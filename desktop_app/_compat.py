"""Work around a reference-counting bug of PySide6 6.12 on CPython 3.11.

PySide6 6.12.0 releases one reference too many to ``True``/``False`` on every
``Signal.emit()`` made from Python, and to ``None`` whenever an invalid ``QVariant``
(a model's ``data()`` returning None) comes back to Python.  On CPython 3.12+ those
objects are immortal and nothing happens; on 3.11 their counts fall with every call and
the interpreter aborts ("Fatal Python error: bool_dealloc") after a few thousand signals
— minutes into a session (6.11.3 does not have the bug).

The fix pins nothing: it gives the three singletons the same treatment 3.12 does, by
adding 2**40 to their reference counts once at import, so the stray releases can never
bring them to zero.  They are never freed anyway, so this leaks nothing.  It applies
only to CPython < 3.12 with PySide6 >= 6.12, and is harmless should a later 6.12.x fix
the bug.
"""

from __future__ import annotations

import ctypes
import sys

#: Added to the reference counts of None/True/False (far beyond any session's calls).
_MARGIN = 1 << 40


def _pyside_version() -> tuple[int, int]:
    try:
        from PySide6 import __version_info__
    except ImportError:  # pragma: no cover - PySide6 is a dependency
        return (0, 0)
    return (int(__version_info__[0]), int(__version_info__[1]))


def protect_singletons() -> bool:
    """Apply the workaround where it is needed; True if it was applied."""
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return False
    if _pyside_version() < (6, 12):
        return False
    for singleton in (None, True, False):
        # ob_refcnt is the first field of every CPython object.
        ctypes.c_ssize_t.from_address(id(singleton)).value += _MARGIN
    return True


APPLIED = protect_singletons()
