"""Keep freed memory in the process for CPU inference and training (glibc malloc tuning).

A BLIP-base batch on the CPU allocates and frees hundreds of large activation tensors
(8 images x 577 tokens x 3072 features x 4 bytes = 57 MB for one MLP output).  glibc
serves every allocation above its mmap threshold (at most 32 MB, 128 kB at start) with a
fresh ``mmap`` and gives it back with ``munmap`` on free, and it trims the top of the heap
as soon as more than twice that threshold is free there.  Each new block is then zeroed
by the kernel page by page on first touch, a noticeable share of the batch time (see
docs/optimization-notes.md, "glibc malloc tuning").  PyTorch has no caching allocator for the CPU; its performance guides
suggest preloading jemalloc or tcmalloc, which a desktop app cannot ask of its users.

:func:`keep_freed_memory` asks glibc, through ``mallopt``, to serve large blocks from the
heap (``M_MMAP_MAX = 0``) and to keep up to :data:`TRIM_THRESHOLD` of free memory at the
top of the heap (``M_TRIM_THRESHOLD``), so the next batch reuses the pages the previous
one freed.  The settings are process-wide
and only change *when* memory goes back to the OS, never what a computation returns.
:func:`release_free_memory` (``malloc_trim``) hands the free pages back when a job ends,
so an idle app does not sit on the peak of its last batch.

Only glibc (Linux) is tuned; elsewhere both functions do nothing.  Setting
``CAPTIONDESK_MALLOC_TUNING=0`` turns the tuning off (to compare, or if a system
allocator misbehaves with it).  This module imports nothing heavy and no Qt.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading

__all__ = ["TRIM_THRESHOLD", "keep_freed_memory", "release_free_memory", "tuning_enabled"]

log = logging.getLogger(__name__)

#: Free memory glibc may keep at the top of the heap instead of returning it (1 GiB:
#: several batches' worth of BLIP-base activations; :func:`release_free_memory` returns
#: it when a job ends).
TRIM_THRESHOLD = 1 << 30

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_lock = threading.Lock()
_applied: bool | None = None  # None: not tried yet


def tuning_enabled() -> bool:
    """Whether the tuning may be applied here: glibc, and not switched off by the environment."""
    if os.environ.get("CAPTIONDESK_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Tune glibc malloc for large, short-lived tensors (see the module docstring).

    Idempotent and thread-safe; returns whether the tuning is in effect.
    """
    global _applied
    with _lock:
        if _applied is not None:
            return _applied
        _applied = False
        if not tuning_enabled():
            return False
        libc = _libc()
        if libc is None or not hasattr(libc, "mallopt"):
            return False
        # mallopt returns 1 on success, 0 on error.
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        if ok:
            log.debug("glibc malloc tuned: large blocks from the heap, %d MB kept free", TRIM_THRESHOLD >> 20)
        else:
            log.warning("glibc mallopt refused the CPU inference tuning; continuing without it")
        _applied = ok
        return ok


def release_free_memory() -> None:
    """Return free heap pages to the OS (``malloc_trim(0)``); call when a job ends."""
    if not tuning_enabled():
        return
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
