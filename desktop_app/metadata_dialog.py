"""File → Write captions into photos…: :func:`core.metadata.write_metadata` (as ``captiondesk write-metadata``).

Nothing changes before the person has seen what will: the dialog first runs the same
function with ``dry_run=True`` (every file is read, none written) and shows how many
photos would be updated in place, how many ``.xmp`` sidecars written, and how many are
already up to date.  "Write" is enabled once that check is done for the current choices.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDialog,
    QFormLayout,
    QGroupBox,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from desktop_app.dialog_kit import DIALOG_WIDTH, JobFooter, JobRunner, Scope, ScopePicker, wrapped

IN_FILE_HELP = (
    "JPEG, PNG, TIFF and WebP get the caption inside the file (XMP description, IPTC caption, and the "
    "EXIF description when it is plain ASCII); the pixels are never touched. HEIC, AVIF and other "
    "formats get an .xmp sidecar."
)
SIDECAR_HELP = (
    "Every photo is left untouched; the caption goes into an .xmp file beside it: IMG_1.xmp, or "
    "IMG_1.HEIC.xmp when that file already exists or another photo shares the name (the form "
    "darktable and digiKam use)."
)


class MetadataDialog(QDialog):
    written = Signal(object)

    def __init__(self, library: Any, scope: Scope, *, sidecar_naming: str = "auto",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Write captions into photos")
        self.setFixedWidth(DIALOG_WIDTH)
        self.library = library
        #: ``auto``, ``stem`` or ``full`` (Preferences → Sidecar names; core.metadata.SIDECAR_NAMINGS).
        self.sidecar_naming = sidecar_naming
        self.plan: Any = None
        self.stats: Any = None
        self._checked_choices: tuple[Any, ...] | None = None
        self._mode = ""
        self.runner = JobRunner(self)

        self.in_file = QRadioButton("Into the photo files")
        self.sidecar = QRadioButton(".xmp sidecar files only")
        self.in_file.setChecked(True)
        self.where_help = wrapped(IN_FILE_HELP)
        where = QGroupBox("Where")
        where_layout = QVBoxLayout(where)
        where_layout.addWidget(self.in_file)
        where_layout.addWidget(self.sidecar)
        where_layout.addWidget(self.where_help)
        self.verified_only = QRadioButton("Only captions a person wrote or accepted (verified)")
        self.all_captioned = QRadioButton("Every current caption (model captions too)")
        self.verified_only.setChecked(True)
        captions = QGroupBox("Captions")
        captions_layout = QVBoxLayout(captions)
        captions_layout.addWidget(self.verified_only)
        captions_layout.addWidget(self.all_captioned)
        self.scope_picker = ScopePicker(scope)
        images = QGroupBox("Images")
        QVBoxLayout(images).addWidget(self.scope_picker)
        # Wrapped, not elided: every number in it matters (the text is bounded: counts only).
        self.plan_label = wrapped("Not checked yet")
        self.check_button = QPushButton("Check again")
        form = QFormLayout()
        form.addRow("Will change", self.plan_label)

        self.footer = JobFooter("Write")
        self.footer.buttons.insertWidget(1, self.check_button)
        layout = QVBoxLayout(self)
        layout.addWidget(where)
        layout.addWidget(captions)
        layout.addWidget(images)
        layout.addLayout(form)
        layout.addWidget(self.footer)

        self.in_file.toggled.connect(lambda on: self.where_help.setText(IN_FILE_HELP if on else SIDECAR_HELP))
        for signal in (self.in_file.toggled, self.verified_only.toggled, self.scope_picker.changed):
            signal.connect(self._choices_changed)
        self.check_button.clicked.connect(self.check)
        self.footer.start_button.clicked.connect(self.start)
        self.footer.cancel_button.clicked.connect(self.runner.cancel)
        self.footer.close_button.clicked.connect(self.close)
        self.runner.progress.connect(self.footer.show_progress)
        self.runner.finished.connect(self._on_finished)
        self.runner.failed.connect(lambda message, _detail: self._on_failed(message))
        self.footer.start_button.setEnabled(False)
        self.check()

    def choices(self) -> tuple[bool, str, str]:
        return self.sidecar.isChecked(), "verified" if self.verified_only.isChecked() else "captioned", \
            self.scope_picker.key()

    def _choices_changed(self) -> None:
        self.footer.start_button.setEnabled(False)
        self.plan_label.setText("Not checked yet")
        if not self.runner.running:
            self.check()

    def _run(self, dry_run: bool) -> bool:
        if self.runner.running:
            return False
        sidecar, only, key = self.choices()
        scope, library, naming = self.scope_picker.scope, self.library, self.sidecar_naming
        self._mode = "check" if dry_run else "write"
        self._pending_choices = (sidecar, only, key)

        def work(progress: Any, cancel: Any) -> Any:
            from core.metadata import write_metadata

            return write_metadata(library, sidecar=sidecar, sidecar_naming=naming, only=only, dry_run=dry_run,
                                  progress=progress, cancel=cancel, **scope.core_arguments(key, library))

        self.footer.set_running(True, "Checking what would change…" if dry_run else "Writing captions…")
        self.check_button.setEnabled(False)
        return self.runner.start(work)

    def check(self) -> bool:
        """Dry run: count what a write with the current choices would change."""
        return self._run(dry_run=True)

    def start(self) -> bool:
        if self._checked_choices != self.choices():
            return self.check()
        return self._run(dry_run=False)

    def _on_finished(self, stats: Any) -> None:
        self.check_button.setEnabled(True)
        problems = "\n".join(stats.problems[:20])
        if self._mode == "check":
            self.plan = stats
            if self._pending_choices != self.choices():  # changed while checking
                self.footer.finish("")
                self.check()
                return
            self._checked_choices = self._pending_choices
            text = (f"{stats.written} photos updated, {stats.sidecars} sidecars written; "
                    f"{stats.unchanged} already up to date, {stats.missing} missing, {stats.errors} cannot be written")
            self.plan_label.setText(text)
            self.plan_label.setToolTip(problems)
            self.footer.finish("Cancelled check." if stats.cancelled else "Checked: nothing written yet.")
            self.footer.start_button.setEnabled(not stats.cancelled and stats.written + stats.sidecars > 0)
            return
        self.stats = stats
        self.footer.finish(("Cancelled" if stats.cancelled else "Done")
                           + f": captions written into {stats.written} photos and {stats.sidecars} sidecars; "
                           f"{stats.unchanged} already up to date, {stats.errors} failed")
        self.footer.status.setToolTip(self.footer.status.full_text() + ("\n" + problems if problems else ""))
        self.footer.start_button.setEnabled(False)
        self._checked_choices = None
        self.written.emit(stats)

    def _on_failed(self, message: str) -> None:
        self.check_button.setEnabled(True)
        self.footer.finish(message)
        self.footer.start_button.setEnabled(False)

    def closeEvent(self, event: Any) -> None:
        self.runner.shutdown()
        super().closeEvent(event)
