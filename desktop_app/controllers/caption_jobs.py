"""Batch captioning from the window: the Caption dialog, start, pause, cancel, progress.

What the status bar says through a job: "Starting…", "Loading model…", "Captioning the
first batch…", then counts with a speed and ETA measured by
:class:`~desktop_app.jobs_widget.JobClock` (paused time excluded), "Cancelling…" from the
click until the job stops, and afterwards a link "N images failed" that opens the log.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from core import queries, view_rows
from core.captioning.job_spec import CaptionJobSpec
from core.jobs import Progress
from core.queries import ImageFilter
from desktop_app.caption_dialog import SCOPE_FILTER, SCOPE_LIBRARY, SCOPE_SELECTION, CaptionDialog
from desktop_app.jobs_widget import JobClock, format_bytes, format_eta, plural
from desktop_app.operations import LibraryChanges

if TYPE_CHECKING:
    from collections.abc import Callable

    from PySide6.QtWidgets import QLabel

    from core.restyle.spec import RestyleSpec
    from desktop_app.controllers.image_review import ImageReviewController
    from desktop_app.controllers.shell import WindowShell
    from desktop_app.grid_model import ImageGridModel
    from desktop_app.jobs_widget import JobStatusWidget
    from desktop_app.library_views import GridContent, JobCatchUp
    from desktop_app.model_thread import CaptionService

log = logging.getLogger("captiondesk.gui")


def progress_text(done: int, total: int | None, rate: float | None, eta: float | None, errors: int) -> str:
    """The status-bar line for a running captioning job."""
    if done == 0:
        return "Captioning the first batch…" if not total else f"Captioning the first batch of {total:,} images…"
    parts = [f"Captioning {done:,}" + (f" / {total:,}" if total else "")]
    if rate:
        parts.append(f"{rate:.1f} img/s")
    if eta is not None:
        parts.append(f"ETA {format_eta(eta)}")
    if errors:
        parts.append(plural(errors, "error"))
    return " · ".join(parts)


def gui_wording(message: str) -> str:
    """A model-loading message in the window's words: core's name the CLI's --model flag."""
    return (message
            .replace("and point --model at the local folder that contains it",
                     "and choose it in Caption images… → Model → Folder… (the folder that contains it")
            .replace(" (the folder with config.json and the weights), e.g. --model /path/to/",
                     ": the one with config.json and the weights), e.g. the folder ")
            .replace("point --model at a local folder containing the model",
                     "choose a local model folder in Caption images… → Model → Folder…")
            .replace("Point --model at the folder that contains config.json",
                     "Choose the folder that contains config.json (Caption images… → Model → Folder…)"))


class CaptionJobsController:
    """Owns captioning's status-bar widgets (progress, "N images failed") and the Caption dialog."""

    def __init__(self, window: WindowShell, *, service: CaptionService, status: JobStatusWidget,
                 failures_label: QLabel, model: ImageGridModel, current: ImageReviewController,
                 grid_content: GridContent, job_catch_up: JobCatchUp, hide_banner: Callable[[], None]) -> None:
        self.window = window
        self.service = service
        self.status = status
        self.failures_label = failures_label
        self.model = model
        self.current = current
        self.grid_content = grid_content
        self.job_catch_up = job_catch_up
        self.hide_banner = hide_banner
        self.clock = JobClock()
        self.failed_count = 0
        service.model_loading.connect(self._on_model_loading)
        service.model_loaded.connect(self._on_model_loaded)
        service.model_message.connect(self._on_model_message)
        service.download_progress.connect(self._on_download_progress)
        service.progress.connect(self._on_progress)
        service.captions_landed.connect(self._on_captions_landed)
        service.finished.connect(self._on_finished)
        service.failed.connect(self._on_failed)
        status.pause_toggled.connect(self._on_pause_toggled)
        status.cancel_clicked.connect(self.cancel_captioning)

    def open_caption_dialog(self, *, selection: bool = False) -> None:
        """The Caption dialog; *selection*: its scope starts on the selected photos (the photo menu)."""
        w = self.window
        if w.library is None:
            return
        from core.kinds import all_kinds
        from core.training.current import current_model
        from core.training.versions import get_active_restyler, is_restyler, list_versions

        with w.library.db.read() as session:
            known = [key.model_name for key, _n in view_rows.model_keys(session)]
            kinds = [(k.name, k.label) for k in all_kinds(session).values()]
            uncaptioned = queries.count_filtered(session, ImageFilter(states=queries.NEEDS_CAPTION))
        versions, active = list_versions(w.library), get_active_restyler(w.library)
        dialog = CaptionDialog(
            defaults=w.settings.caption_defaults(w.library),
            known_models=known,
            versions=[v.name for v in versions if not is_restyler(v)],
            restylers=list(dict.fromkeys([*([active.name] if active is not None else []),
                                          *(v.name for v in versions if is_restyler(v))])),
            current=current_model(w.library),
            selection_count=len(self.current.selected_ids()),
            filter_count=self.model.rowCount(),
            uncaptioned_count=uncaptioned,
            kinds=kinds,
            parent=w,
        )
        if selection and dialog.scope_selection.isEnabled():
            dialog.scope_selection.setChecked(True)
        if dialog.exec() == CaptionDialog.DialogCode.Accepted:
            self.start_captioning(dialog.spec(), dialog.scope(), dialog.restyle_spec())

    def start_captioning(self, spec: CaptionJobSpec, scope: str, restyle: RestyleSpec | None = None) -> bool:
        """Start *spec* over *scope* (selection / current view / everything uncaptioned), then
        *restyle* the captions it wrote when given."""
        w = self.window
        if w.library is None:
            return False
        if scope == SCOPE_SELECTION:
            spec = spec.with_(scope=self.current.selected_ids())
            empty = not spec.scope
        elif scope == SCOPE_FILTER:
            spec = spec.with_(scope=self.grid_content.current_filter())
            empty = self.model.rowCount() == 0
        elif scope == SCOPE_LIBRARY:
            # The engine's own scope: every readable image except those a person
            # captioned, imported, or this very model version already captioned.
            spec, empty = spec.with_(scope=None), False
        else:
            # Not the whole library: that would also re-caption images another model
            # captioned, which is not what "uncaptioned" means.  The engine evaluates
            # the filter on the inference thread, never here.
            spec, empty = spec.with_(scope=ImageFilter(states=queries.NEEDS_CAPTION, kind=spec.kind)), False
        if empty:
            w.report_error("No images to caption in that scope.")
            return False
        w.settings.set_caption_spec(spec)
        if self.service.model_job is not None:  # training, evaluating or merging a version
            w.report_error(self.service.busy_reason("Captioning"))
            return False
        if not self.service.start(w.library, spec, restyle):
            w.report_error("A captioning job is already running.")
            return False
        self.clock.reset()
        self.set_failed_count(0)
        self.hide_banner()
        self.status.begin(f"Starting {spec.label()}…")
        self.job_catch_up.start()
        log.info("Captioning with %s (%s)", spec.label(), scope)
        return True

    def toggle_pause(self) -> None:
        if self.service.running:
            self.status.pause_button.toggle()

    def _on_pause_toggled(self, paused: bool) -> None:
        if paused:
            self.clock.pause()
            self.service.pause()
            self.status.label.setText(self.status.label.text().split(" — ")[0] + " — paused")
        else:
            self.clock.resume()
            self.service.resume()

    def cancel_captioning(self) -> None:
        if self.service.running:
            self.service.cancel()
            self.clock.resume()
            self.status.mark_cancelling("Cancelling after the current batch…")

    def set_failed_count(self, count: int) -> None:
        """Show "N images failed" (a link to the log) in the status bar; hidden at 0."""
        self.failed_count = count
        label = self.failures_label
        label.setText(f'<a href="#log">{plural(count, "image")} failed</a>')
        label.setToolTip("Show the log with each failed image and why")
        label.setVisible(count > 0)

    def _on_model_loading(self, description: str) -> None:
        self.status.set_stage(f"Loading model {description}…")

    def _on_model_loaded(self, description: str) -> None:
        log.info("Model loaded: %s", description)
        self.status.set_stage("Model loaded — captioning the first batch…")

    def _on_model_message(self, message: str) -> None:
        self.status.set_stage(message)
        log.info(message)

    def _on_download_progress(self, count: int) -> None:
        self.status.set_stage(f"Downloading model: {format_bytes(count)}")

    def _on_progress(self, progress: Progress) -> None:
        rate, eta = self.clock.update(progress.done, progress.total)
        errors = int(progress.counts.get("errors", 0))
        if errors != self.failed_count:
            self.set_failed_count(errors)
        text = progress_text(progress.done, progress.total, rate, eta, errors)
        if self.service.paused:
            text += " — paused"
        self.status.update_progress(text, progress.done, progress.total)

    def _on_captions_landed(self, image_ids: list[int]) -> None:
        self.window.notifier.notify(LibraryChanges.of_captions(image_ids))

    def _on_finished(self, stats: Any) -> None:
        w = self.window
        self.status.end()
        self.job_catch_up.stop_if_idle()
        if stats is None:
            message = "Captioning cancelled before it started"
        else:
            message = stats.summary()
            for problem in list(stats.problems)[:20]:
                log.warning(problem)
            self.set_failed_count(int(stats.errors))
        log.info(message)
        w.announce(message)
        w.notifier.notify(LibraryChanges(job_ended=True))

    def _on_failed(self, message: str, detail: str) -> None:
        w = self.window
        self.status.end()
        self.job_catch_up.stop_if_idle()
        w.report_error(f"Captioning stopped: {gui_wording(message)}", detail)
