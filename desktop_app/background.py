"""Running work off the GUI thread and getting results back safely, in batches.

* running a function on a pool with its result back on the GUI thread is
  :mod:`desktop_app.operations` (a read op, or a write op with its change notice);
* :func:`lower_thread_priority` makes the calling worker thread yield the CPU to the
  GUI thread when both want it (on a 2-core laptop a scan, a captioning job and
  thumbnail decoding otherwise take turns with every repaint).
* :class:`Coalescer` collects items that arrive from any thread and hands them to the
  GUI thread at most once per interval (50 ms by default), the way MusicBrainz Picard
  batches its updates: a job that finishes 500 images in a burst causes one repaint,
  not 500 queued signals.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, QTimer, Signal

#: Niceness added to worker threads (Linux nice is per thread; 0 = the GUI thread's).
POOL_NICENESS = 5
JOB_NICENESS = 10

_lowered = threading.local()


def lower_thread_priority(niceness: int = POOL_NICENESS) -> None:
    """Lower the calling (worker) thread's CPU priority, once per thread.

    When the CPU is contended the scheduler then runs the GUI thread first, which is
    also what gets it the GIL sooner: a waiting thread that is not running cannot take
    it.  Linux: per-thread ``setpriority`` (children, such as torch's OpenMP threads
    started from this thread, inherit it).  Elsewhere Qt's thread priority.  Never
    raises: a platform that refuses just keeps the default priority.
    """
    if getattr(_lowered, "done", False):
        return
    _lowered.done = True
    try:
        if sys.platform.startswith("linux"):
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness))
        else:
            thread = QThread.currentThread()
            if thread is not None:
                thread.setPriority(QThread.Priority.LowPriority)
    except (OSError, RuntimeError, AttributeError):
        pass


class Coalescer(QObject):
    """Thread-safe buffer that emits :attr:`flushed` with everything added, per interval."""

    flushed = Signal(list)
    _kick = Signal()

    def __init__(self, interval_ms: int = 50, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._lock = threading.Lock()
        self._items: list[Any] = []
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.flush)
        # Queued even when add() runs on the GUI thread: the timer starts from the
        # event loop, never re-entrantly inside the caller.
        self._kick.connect(self._arm, Qt.ConnectionType.QueuedConnection)

    def add(self, items: list[Any]) -> None:
        """Queue *items*; callable from any thread."""
        if not items:
            return
        with self._lock:
            was_empty = not self._items
            self._items.extend(items)
        if was_empty:
            self._kick.emit()

    def _arm(self) -> None:
        if not self._timer.isActive():
            self._timer.start()

    def flush(self) -> None:
        """Emit what is buffered now (GUI thread)."""
        with self._lock:
            items, self._items = self._items, []
        if items:
            self.flushed.emit(items)

    def pending(self) -> int:
        with self._lock:
            return len(self._items)
