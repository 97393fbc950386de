"""File → Write captions into photos…: :func:`core.metadata.write_metadata` (as ``captiondesk write-metadata``).

Nothing changes before the person has seen what will: the dialog first runs the same
function with ``dry_run=True`` (every file is read, none written) and shows how many
photos would be updated in place, how many ``.xmp`` sidecars written, and how many are
already up to date; the confirmation lists each kind it writes with its fields.  "Write" is enabled once that check is done for the current choices, and asks once more
(with the count and where the captions go) before any photo file is changed.  Files that
cannot be written are listed in the dialog, one line each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QFormLayout,
    QGroupBox,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from desktop_app.dialog_kit import DIALOG_WIDTH, JobFooter, JobRunner, Scope, ScopePicker, wrapped

IN_FILE_HELP = (
    "JPEG, PNG, TIFF and WebP get the caption inside the file (XMP description, IPTC caption, and the "
    "EXIF description when it is plain ASCII), with the alt text, title and keywords each in its own "
    "fields; the pixels are never touched. HEIC, AVIF and other formats get an .xmp sidecar."
)
SIDECAR_HELP = (
    "Every photo is left untouched; the caption goes into an .xmp file beside it: IMG_1.xmp, or "
    "IMG_1.HEIC.xmp when that file already exists or another photo shares the name (the form "
    "darktable and digiKam use)."
)


def ask(parent: QWidget, text: str) -> bool:
    """A Yes/No question; No is the default, so Enter never changes originals by accident."""
    answer = QMessageBox.question(parent, "Change the photo files?", text,
                                  QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                  QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


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
        #: Asked before the photo files change (replaced in tests).
        self.confirm: Callable[[QWidget, str], bool] = ask

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
        captions = QGroupBox("Captions, alt text, title, keywords")
        captions_layout = QVBoxLayout(captions)
        captions_layout.addWidget(self.verified_only)
        captions_layout.addWidget(self.all_captioned)
        self.replace_keywords = QCheckBox("Replace the photos' own keywords (otherwise merged with them)")
        captions_layout.addWidget(self.replace_keywords)
        self.scope_picker = ScopePicker(scope)
        images = QGroupBox("Images")
        QVBoxLayout(images).addWidget(self.scope_picker)
        # Wrapped, not elided: every number in it matters (the text is bounded: counts only).
        self.plan_label = wrapped("Not checked yet")
        self.check_button = QPushButton("Check again")
        form = QFormLayout()
        form.addRow("Will change", self.plan_label)
        # Always there at a fixed height, so a list of failures never resizes the dialog.
        self.problems = QPlainTextEdit()
        self.problems.setReadOnly(True)
        self.problems.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.problems.setPlaceholderText("Photos that cannot be written are listed here, with the reason.")
        self.problems.setFixedHeight(self.problems.fontMetrics().lineSpacing() * 4 + 12)
        form.addRow("Problems", self.problems)

        self.footer = JobFooter("Write")
        self.footer.buttons.insertWidget(1, self.check_button)
        layout = QVBoxLayout(self)
        layout.addWidget(where)
        layout.addWidget(captions)
        layout.addWidget(images)
        layout.addLayout(form)
        layout.addWidget(self.footer)

        self.in_file.toggled.connect(lambda on: self.where_help.setText(IN_FILE_HELP if on else SIDECAR_HELP))
        for signal in (self.in_file.toggled, self.verified_only.toggled, self.replace_keywords.toggled,
                       self.scope_picker.changed):
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

    def choices(self) -> tuple[bool, str, str, bool]:
        return self.sidecar.isChecked(), "verified" if self.verified_only.isChecked() else "captioned", \
            self.scope_picker.key(), self.replace_keywords.isChecked()

    def _choices_changed(self) -> None:
        self.footer.start_button.setEnabled(False)
        self.plan_label.setText("Not checked yet")
        if not self.runner.running:
            self.check()

    def _run(self, dry_run: bool) -> bool:
        if self.runner.running:
            return False
        sidecar, only, key, replace_keywords = self.choices()
        scope, library, naming = self.scope_picker.scope, self.library, self.sidecar_naming
        self._mode = "check" if dry_run else "write"
        self._pending_choices = (sidecar, only, key, replace_keywords)

        def work(progress: Any, cancel: Any) -> Any:
            from core.metadata import write_metadata

            return write_metadata(library, sidecar=sidecar, sidecar_naming=naming, only=only, dry_run=dry_run,
                                  replace_keywords=replace_keywords, progress=progress, cancel=cancel,
                                  **scope.core_arguments(key, library))

        self.footer.set_running(True, "Checking what would change…" if dry_run else "Writing captions…")
        self.check_button.setEnabled(False)
        return self.runner.start(work)

    def check(self) -> bool:
        """Dry run: count what a write with the current choices would change."""
        return self._run(dry_run=True)

    def confirmation(self) -> str:
        """What Write will do, in words, from the last check: each kind with its fields."""
        from core.metadata import KEYWORDS, kind_field_names

        plan = self.plan
        sidecar = self.sidecar.isChecked()
        lines = []
        for kind, count in plan.kinds_written.items():
            fields = [f for f in kind_field_names(kind) if not sidecar or f.startswith("XMP")]
            note = ""
            if kind == KEYWORDS:
                note = " — replacing the photos' own" if self.replace_keywords.isChecked() else \
                    " — merged with the photos' own"
            lines.append(f"• {kind.replace('_', ' ')} ({count}): {', '.join(fields)}{note}")
        fields_text = "\n".join(lines)
        if sidecar:
            return (f"Write into {plan.sidecars} .xmp sidecar files beside the photos?\n{fields_text}\n"
                    "The photo files themselves are not touched.")
        text = f"Write into {plan.written} photo files? These fields are replaced:\n{fields_text}\nThe pixels are not touched."
        if plan.sidecars:
            text += f" {plan.sidecars} photos in other formats get an .xmp sidecar instead."
        return text + " This changes your original files."

    def start(self) -> bool:
        if self._checked_choices != self.choices():
            return self.check()
        if not self.confirm(self, self.confirmation()):
            self.footer.finish("Nothing written.")
            return False
        return self._run(dry_run=False)

    def _show_problems(self, problems: list[str]) -> None:
        self.problems.setPlainText("\n".join(problems))

    def _on_finished(self, stats: Any) -> None:
        self.check_button.setEnabled(True)
        self._show_problems(list(stats.problems))
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
            self.footer.finish("Cancelled check." if stats.cancelled else "Checked: nothing written yet.")
            self.footer.start_button.setEnabled(not stats.cancelled and stats.written + stats.sidecars > 0)
            return
        self.stats = stats
        self.footer.finish(("Cancelled" if stats.cancelled else "Done")
                           + f": captions written into {stats.written} photos and {stats.sidecars} sidecars; "
                           f"{stats.unchanged} already up to date, {stats.errors} failed")
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
