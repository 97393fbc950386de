"""Work off the GUI thread, and the one notice that says what it changed in the library.

* :class:`ReadOp` runs a function on a :class:`QThreadPool` and hands its result (or its
  exception) to GUI-thread callbacks; it changes nothing, so it announces nothing.
* :class:`WriteOp` does the same for work that changes the library, and on success emits
  :attr:`LibraryNotifier.library_changed` with the :class:`LibraryChanges` it made before
  its own success callback runs: the grid, the sidebar and the caption panel each
  subscribe once and refresh themselves, so no caller refreshes a view by hand.
* Both take an optional *progress* callback: the work is then called as ``work(progress)``
  and each report reaches the callback on the GUI thread (queued), never a widget off it.

The model thread (:mod:`desktop_app.model_thread`) stays its own thing, because it keeps a
loaded model between jobs; what its jobs change goes through the same notice.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from PySide6.QtCore import QObject, Qt, QThreadPool, Signal

from core.edits import Change
from desktop_app.background import POOL_NICENESS, lower_thread_priority

T = TypeVar("T")


@dataclass(frozen=True)
class LibraryChanges:
    """What an operation changed in the open library (what a view may have to show again)."""

    #: Images whose current caption changed (an edit, undo, replace, a job's batch).
    captions: frozenset[int] = frozenset()
    #: Captions of images not listed changed (an import): the grid keeps its scroll place.
    any_caption: bool = False
    #: A caption job ended (its batches came as ``captions``): counts and the current caption.
    job_ended: bool = False
    #: The set of images changed (a scan found or lost some, a folder was removed).
    images: bool = False
    #: The library's folders changed (added, removed).
    folders: bool = False
    #: Model versions changed (trained, deleted, activated).
    versions: bool = False
    #: Duplicate groups or "keep one" marks changed (core.duplicates).
    duplicates: bool = False
    #: Another library (or none) is shown now: everything is new.
    library: bool = False
    #: The person's own edit in this window: the caption panel shows the result even
    #: over text it still holds (undo while typing), unlike a job's batch.
    edited: bool = field(default=False, compare=False)

    @classmethod
    def of_edits(cls, changes: Iterable[Change], *, edited: bool = True) -> LibraryChanges:
        """The notice for core caption edits (:class:`core.edits.Change`)."""
        return cls(captions=frozenset(c.image_id for c in changes), edited=edited)

    @classmethod
    def of_captions(cls, image_ids: Iterable[int], *, edited: bool = False) -> LibraryChanges:
        return cls(captions=frozenset(image_ids), edited=edited)

    def __bool__(self) -> bool:
        return bool(self.captions or self.any_caption or self.job_ended or self.images or self.folders or self.versions
                    or self.duplicates or self.library)

    def membership_changed(self) -> bool:
        """Which images a filter finds may differ: the grid queries its ids again."""
        return self.images or self.library


class LibraryNotifier(QObject):
    """The window's one change notice; views connect to :attr:`library_changed`."""

    #: A :class:`LibraryChanges`, emitted on the GUI thread.
    library_changed = Signal(object)

    def notify(self, changes: LibraryChanges) -> None:
        if changes:
            self.library_changed.emit(changes)


class _Delivery(QObject):
    """Lives on the GUI thread; the worker emits on it and the slots run on the GUI thread."""

    done = Signal(object)
    failed = Signal(object)
    progress = Signal(object)


#: Deliveries whose work is still running (a QObject with no Python reference would be
#: collected before its signal is delivered).
_in_flight: set[_Delivery] = set()


def run_in_pool(
    pool: QThreadPool,
    work: Callable[..., Any],
    on_done: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    *,
    on_progress: Callable[[Any], None] | None = None,
    priority: int = 0,
    niceness: int = POOL_NICENESS,
) -> None:
    """Run *work* on *pool*; ``on_done(result)`` / ``on_error(exc)`` run on the GUI thread.

    With *on_progress*, *work* is called as ``work(progress)``.  Must be called from the
    GUI thread (the delivery object is created there).
    """
    delivery = _Delivery()
    _in_flight.add(delivery)

    def finish(callback: Callable[[Any], None] | None, value: Any) -> None:
        _in_flight.discard(delivery)
        delivery.deleteLater()
        if callback is not None:
            callback(value)

    queued = Qt.ConnectionType.QueuedConnection
    delivery.done.connect(lambda value: finish(on_done, value), queued)
    delivery.failed.connect(lambda exc: finish(on_error, exc), queued)
    if on_progress is not None:
        delivery.progress.connect(on_progress, queued)

    def run() -> None:
        lower_thread_priority(niceness)
        try:
            result = work(delivery.progress.emit) if on_progress is not None else work()
        except BaseException as exc:  # noqa: BLE001 - delivered to the GUI, never lost
            exc.__traceback_text__ = traceback.format_exc()  # type: ignore[attr-defined]
            delivery.failed.emit(exc)
        else:
            delivery.done.emit(result)

    pool.start(run, priority)


class ReadOp(Generic[T]):
    """Read something off the GUI thread: ``ReadOp(work, success=...).run(pool)``."""

    def __init__(
        self,
        work: Callable[..., T],
        *,
        success: Callable[[T], None] | None = None,
        failure: Callable[[BaseException], None] | None = None,
        progress: Callable[[Any], None] | None = None,
    ) -> None:
        self.work = work
        self.on_success = success
        self.on_failure = failure
        self.on_progress = progress

    def _done(self, result: T) -> None:
        if self.on_success is not None:
            self.on_success(result)

    def run(self, pool: QThreadPool, *, priority: int = 0, niceness: int = POOL_NICENESS) -> None:
        run_in_pool(pool, self.work, self._done, self.on_failure, on_progress=self.on_progress,
                    priority=priority, niceness=niceness)


class WriteOp(ReadOp[T]):
    """Change the library off the GUI thread, then announce what changed.

    *changes* is a :class:`LibraryChanges`, or a function of the work's result that
    returns one (a job that learns what it touched as it goes).  The notice goes out
    before *success* runs, so the views are current when the caller reacts.  A failure
    announces nothing: whatever the work committed before it failed is left to the
    failure callback, which knows what the work was.
    """

    def __init__(
        self,
        work: Callable[..., T],
        changes: LibraryChanges | Callable[[T], LibraryChanges],
        notifier: LibraryNotifier,
        *,
        success: Callable[[T], None] | None = None,
        failure: Callable[[BaseException], None] | None = None,
        progress: Callable[[Any], None] | None = None,
    ) -> None:
        super().__init__(work, success=success, failure=failure, progress=progress)
        self.changes = changes
        self.notifier = notifier

    def _done(self, result: T) -> None:
        changes = self.changes(result) if callable(self.changes) else self.changes
        self.notifier.notify(changes)
        super()._done(result)
