"""Training a new model version from the window, and switching captioning to it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtWidgets import QMessageBox

from desktop_app.caption_dialog import SCOPE_LIBRARY
from desktop_app.operations import LibraryChanges

if TYPE_CHECKING:
    from desktop_app.controllers.caption_jobs import CaptionJobsController
    from desktop_app.controllers.shell import WindowShell
    from desktop_app.model_thread import CaptionService


class VersionsController:
    """Owns the Train dialog; a new version is captioned with through the caption jobs."""

    def __init__(self, window: WindowShell, *, service: CaptionService, caption_jobs: CaptionJobsController) -> None:
        self.window = window
        self.service = service
        self.caption_jobs = caption_jobs
        self.train_dialog = None

    def open_train_dialog(self) -> None:
        """Retrain the captioner on the verified captions (a non-modal dialog, one at a time)."""
        w = self.window
        if w.library is None:
            return
        from desktop_app.train_dialog import TrainDialog

        # The open dialog, or a closed one whose run is still going or ended unseen: its
        # progress, Cancel, result or error live there.
        dialog = self.train_dialog
        if dialog is not None and (dialog.isVisible() or dialog.running or dialog.unseen_result):
            dialog.show()
            dialog.raise_()
            dialog.activateWindow()
            return
        if dialog is not None:
            dialog.deleteLater()  # nothing left to see in it
        # The base model is the library's current model's (the dialog reads it).
        # Training shares the window's model thread with captioning: one job at a time.
        dialog = TrainDialog(w.library, service=self.service, parent=w)
        dialog.use_requested.connect(self.use_model_version)
        dialog.version_created.connect(lambda _name: w.notifier.notify(LibraryChanges(versions=True)))
        self.train_dialog = dialog
        dialog.show()

    def offer_new_version(self, name: str) -> None:
        """Ask, then make *name* active and re-caption the model-only images."""
        answer = QMessageBox.question(
            self.window,
            "New model version",
            f"Make “{name}” the active model and re-caption the images that only have "
            "model captions? Your own captions are kept.",
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.use_model_version(name)

    def use_model_version(self, name: str) -> bool:
        """Make *name* the active version and re-caption the images only models captioned."""
        w = self.window
        if w.library is None:
            return False
        from core.training.versions import set_active

        set_active(w.library, name)
        spec = w.settings.caption_spec().with_(backend="local", endpoint=None, model=name, adapter=None,
                                               overwrite_model_captions=False)
        return self.caption_jobs.start_captioning(spec, SCOPE_LIBRARY)
