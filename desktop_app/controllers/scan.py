"""Background scans of the library's folders, and what the window says after one."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from core import queries
from core.jobs import Progress
from core.queries import ImageFilter
from desktop_app.background import JOB_NICENESS, Coalescer
from desktop_app.jobs_widget import plural
from desktop_app.operations import LibraryChanges, ReadOp, WriteOp

if TYPE_CHECKING:
    from collections.abc import Callable

    from PySide6.QtCore import QThreadPool

    from desktop_app.controllers.shell import WindowShell
    from desktop_app.jobs_widget import JobStatusWidget
    from desktop_app.library_views import GridContent, JobCatchUp
    from desktop_app.sidebar import LibrarySidebar

log = logging.getLogger("captiondesk.gui")


class ScanController:
    """Owns the scan's status-bar widget; tells the grid when a running scan found images."""

    def __init__(self, window: WindowShell, *, status: JobStatusWidget, sidebar: LibrarySidebar,
                 grid_content: GridContent, job_catch_up: JobCatchUp, scan_pool: QThreadPool,
                 offer: Callable[[int], None], finished: Callable[[Any], None]) -> None:
        self.window = window
        self.status = status
        self.sidebar = sidebar
        self.grid_content = grid_content
        self.job_catch_up = job_catch_up
        self.scan_pool = scan_pool
        #: Shows "N photos have no caption" (the window's banner).
        self.offer = offer
        self.finished = finished
        status.cancel_clicked.connect(self.cancel_scan)
        self._cancel: threading.Event | None = None
        self._found = 0

    @property
    def scanning(self) -> bool:
        return self._cancel is not None

    def rescan(self) -> None:
        root_id, _folder = self.sidebar.location()
        self.start_scan([root_id] if root_id is not None else None)

    def start_scan(self, root_ids: list[int] | None = None) -> bool:
        w = self.window
        library = w.library
        if library is None:
            return False
        if self._cancel is not None:
            w.statusBar().showMessage("A scan is already running", 3000)
            return False
        cancel = threading.Event()
        self._cancel = cancel
        self._found = 0
        self.status.begin("Scanning…")
        # Progress arrives at most every 0.1 s (the scanner throttles); a coalescer
        # keeps only the newest snapshot per 50 ms anyway.
        progress = Coalescer(50, w)
        progress.flushed.connect(lambda items: self._on_progress(items[-1]))
        self.job_catch_up.start()

        def work() -> Any:
            # In a child process: a big scan's Python work would otherwise fight
            # every repaint for the GIL (see core.scan_process).
            from core.scan_process import scan_in_subprocess

            return scan_in_subprocess(library.path, root_ids, progress=lambda p: progress.add([p]), cancel=cancel)

        def done(stats: Any) -> None:
            progress.flush()
            progress.deleteLater()
            self._cancel = None
            self.status.end()
            self.job_catch_up.stop_if_idle()
            summary = stats.summary()
            log.info(summary)
            for problem in stats.problems[:20]:
                log.warning(problem)
            w.announce(summary)
            self.offer_captioning()
            self.finished(stats)

        def failed(exc: BaseException) -> None:
            progress.deleteLater()
            self._cancel = None
            self.status.end()
            self.job_catch_up.stop_if_idle()
            w.report_exception(exc)

        WriteOp(work, LibraryChanges(images=True), w.notifier, success=done, failure=failed).run(
            self.scan_pool, niceness=JOB_NICENESS)
        return True

    def cancel_scan(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self.status.mark_cancelling("Cancelling the scan…")

    def offer_captioning(self) -> None:
        """Count the images with no caption (on a worker) and offer to caption them."""
        w = self.window
        library = w.library
        if library is None:
            return

        def work() -> int:
            with library.db.read() as session:
                return queries.count_filtered(session, ImageFilter(states=queries.NEEDS_CAPTION))

        def done(count: int) -> None:
            if library is w.library:
                self.offer(count)

        ReadOp(work, success=done, failure=w.report_exception).run(w.pool)

    def _on_progress(self, progress: Progress) -> None:
        rate = f" ({progress.rate:,.0f}/s)" if progress.rate else ""
        self.status.update_progress(f"Scanning: {plural(progress.done, 'file')}{rate}", progress.done, progress.total)
        # Re-query the grid only when the scan found something new: a no-change re-scan
        # of 100k files should not re-read 100k ids every refresh.
        found = progress.counts.get("new", 0) + progress.counts.get("moved", 0)
        if found != self._found:
            self._found = found
            self.grid_content.dirty = True
