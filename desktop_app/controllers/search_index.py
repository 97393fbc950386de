"""Search by meaning in the window: the index kept current in the background, and "Find similar".

The index job (``core.search.index_job.update_index``) runs in the window's one long-lived
search worker process (``core.search.worker_process``, which also embeds the queries, so
this process never loads torch), watched from the pool, one space at a time, whenever a search by meaning is on (or a "Find similar"
asks for the picture index) and after captions or images change; it never blocks the GUI
thread.  When a run embedded or removed something, the grid ranks again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThreadPool, QTimer, Signal
from PySide6.QtWidgets import QLabel

from core.library import Library
from core.search.worker_process import SearchWorker
from desktop_app.library_views import GridContent
from desktop_app.operations import LibraryChanges, LibraryNotifier, run_in_pool

#: How long after a change the index catches up (a caption job's batches come in bursts).
CATCH_UP_MS = 2000


class SearchIndexer(QObject):
    """Keeps the search-by-meaning index of the open library current while it is used."""

    #: A run ended: (space, its stats).
    finished = Signal(str, object)

    def __init__(self, grid_content: GridContent, pool: QThreadPool, library: Callable[[], Library | None],
                 notifier: LibraryNotifier, status: QLabel, report_exception: Callable[[BaseException], None],
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.grid_content = grid_content
        self.filter_bar = grid_content.filter_bar
        self.pool = pool
        self.library = library
        self.status = status
        self.report_exception = report_exception
        self.worker = SearchWorker()
        grid_content.encode_query = self.worker.embed
        self.running: str | None = None
        self._cancel = threading.Event()
        self._wanted: set[str] = set()
        #: Called with no argument once the space's run ends (e.g. show the similar photos).
        self._then: dict[str, list[Callable[[], None]]] = {}
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(CATCH_UP_MS)
        self._timer.timeout.connect(self._catch_up)
        self.filter_bar.changed.connect(self._catch_up)
        notifier.library_changed.connect(self._on_library_changed)

    def _spaces_in_use(self) -> set[str]:
        spaces = {self.filter_bar.meaning()} - {None}
        if self.grid_content.similar_to is not None:
            spaces.add("image")
        return spaces  # type: ignore[return-value]

    def _on_library_changed(self, changes: LibraryChanges) -> None:
        if changes.library:
            self._cancel.set()
            self._wanted.clear()
            self._then.clear()
        if changes and self._spaces_in_use():
            self._timer.start()

    def _catch_up(self) -> None:
        for space in self._spaces_in_use():
            self.update(space)

    def update(self, space: str, then: Callable[[], None] | None = None) -> None:
        """Bring the *space* index up to date in the background (queued behind a running one)."""
        if then is not None:
            self._then.setdefault(space, []).append(then)
        library = self.library()
        if library is None:
            return
        if self.running is not None:
            self._wanted.add(space)
            return
        self.running = space
        self._cancel = cancel = threading.Event()
        model = self.grid_content.search_models.get(space)
        self.status.setText("Indexing for search…")
        self.status.show()

        def work(progress: Callable[[Any], None]) -> Any:
            # The worker process: loading torch and tokenizing would hold this process's GIL.
            return self.worker.index(library.path, space, model, progress=progress, cancel=cancel)

        def progress(report: Any) -> None:
            if report.total:
                self.status.setText(f"Indexing for search: {report.done} of {report.total}")

        def done(stats: Any) -> None:
            self._ended(space)
            if library is not self.library():
                return
            if stats.embedded or stats.removed:
                self.grid_content.reload_ids(keep_scroll=True)
            for callback in self._then.pop(space, []):
                callback()
            self.finished.emit(space, stats)

        def failed(exc: BaseException) -> None:
            self._ended(space)
            self._then.pop(space, None)
            self.report_exception(exc)

        run_in_pool(self.pool, work, done, failed, on_progress=progress)

    def _ended(self, space: str) -> None:
        self.running = None
        self.status.hide()
        if self._wanted:
            self.update(self._wanted.pop())

    def find_similar(self, image_id: int, name: str) -> None:
        """The grid shows the photos that look like *image_id*, once the picture index is current."""
        self.update("image", then=lambda: self.grid_content.show_similar(image_id, name))

    def stop(self) -> None:
        """Cancel a run (another library opens); finished batches stay."""
        self._cancel.set()

    def close(self) -> None:
        """The window closes: cancel a run and end the worker process."""
        self.stop()
        self.worker.close()
