"""The status bar's view of the model thread's training, evaluating or merging job.

Its own window (the Train dialog, the Versions window) can be closed while it runs: the
main window's status bar keeps showing it, with Show (reopens that window) and Cancel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject

from desktop_app.jobs_widget import JobStatusWidget
from desktop_app.model_thread import CaptionService

log = logging.getLogger("captiondesk.gui")


class ModelJobStatus(QObject):
    def __init__(self, service: CaptionService, status: JobStatusWidget, announce: Callable[[str], None],
                 report_error: Callable[[str, str | None], None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.service = service
        self.status = status
        self.announce = announce
        self.report_error = report_error
        self.shown_job: Any = None
        status.cancel_clicked.connect(self.cancel)
        status.show_clicked.connect(self.show_owner)
        service.state_changed.connect(self.follow)

    def follow(self) -> None:
        """Show the model thread's training/evaluating/merging job in the status bar."""
        job = self.service.model_job
        if job is self.shown_job:
            return
        self.shown_job = job
        if job is None:
            self.status.end()
            return
        self.status.begin(f"{job.description}…")
        self.status.show_button.setEnabled(job.owner is not None)
        self.status.cancel_button.setVisible(job.cancellable)
        job.progress.connect(self._on_progress)
        job.cancel_requested.connect(self._on_cancel_requested)
        job.finished.connect(self._on_finished)
        job.failed.connect(self._on_failed)

    def _on_progress(self, progress: Any) -> None:
        job = self.shown_job
        if job is not None:
            self.status.update_progress(f"{job.description}: {progress.message}", int(progress.done),
                                        int(progress.total) if progress.total else None)

    def cancel(self) -> None:
        if self.shown_job is not None:
            self.shown_job.request_cancel()

    def _on_cancel_requested(self) -> None:
        job = self.shown_job
        if job is not None:
            self.status.mark_cancelling(f"Stopping {job.description[0].lower()}{job.description[1:]}…")

    def _owner_hidden(self, job: Any) -> bool:
        return job is not None and (job.owner is None or not job.owner.isVisible())

    def _on_finished(self, result: Any) -> None:
        job = self.sender()
        if job is None:
            return
        # Its window may be closed: say it ended, and where to see how (the verb reopens it).
        ended = "cancelled" if getattr(result, "cancelled", False) else "finished"
        where = " Open it again to see the result." if self._owner_hidden(job) else ""
        log.info("%s: %s.", job.description, ended)
        self.announce(f"{job.description}: {ended}.{where}")

    def _on_failed(self, message: str, detail: str) -> None:
        job = self.sender()
        if self._owner_hidden(job):
            self.report_error(f"{job.description} failed: {message}", detail or None)

    def show_owner(self) -> None:
        owner = self.shown_job.owner if self.shown_job is not None else None
        if owner is not None:
            owner.show()
            owner.raise_()
            owner.activateWindow()
