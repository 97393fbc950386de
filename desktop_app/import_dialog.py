"""File → Import captions…: :func:`core.datasets.import_job.import_captions` (as ``captiondesk import``).

Format, source (a file or a folder), whether a person checked the captions, and whether
they are the person's own edits made in another tool that should replace the library's
captions (``--replace``).  Nothing is imported before the dialog has shown what would
change: it first runs the same function with ``dry_run=True`` (nothing written) for the
current choices and shows how many captions would be added, kept beside a person's,
replaced and unmatched; Import is enabled once that preview is shown.  The import runs
in the background with progress and Cancel; its result wraps in the dialog, and the
rows that could not be used are listed below it.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from core.datasets.readers import IMPORT_FORMATS
from desktop_app.dialog_kit import (
    DIALOG_WIDTH,
    JobFooter,
    JobRunner,
    lines_high,
    remember_folder,
    start_folder,
    wrapped,
)

FORMAT_DESCRIPTIONS = {
    "sidecar": "a folder of images with .txt or .caption files of the same name",
    "flickr8k": "Flickr8k: captions.txt (or Flickr8k.token.txt) and its images",
    "coco": "COCO captions JSON (a file, or a folder holding annotations/)",
    "imagefolder": "Hugging Face imagefolder: metadata.jsonl or metadata.csv",
    "csv": "a CSV file with a file name column and a caption column",
    "parquet": "parquet files with file name and caption columns",
    "metadata": "captions already in the photos (XMP, IPTC, EXIF)",
}
#: Formats whose source is a single file as often as a folder.
FILE_FORMATS = {"csv", "parquet", "coco", "flickr8k"}

VERIFIED_EXPLANATION = (
    "Tick this only if people wrote or checked every one of these captions (as in Flickr8k "
    "or COCO). They are then stored as verified: training learns from them and evaluation "
    "scores models against them, exactly like captions you accept yourself. Leave it off "
    "for captions a program wrote; they are kept as suggestions for you to review, and "
    "training ignores them unless you ask it to include imported captions."
)

REPLACE_EXPLANATION = (
    "For captions you exported, corrected in another program (taggui, a text editor) and now bring "
    "back: each edited caption becomes the current, verified one, also where a person's caption is "
    "current now; the caption it replaces stays in the history. Captions you left unchanged add nothing."
)


class ImportDialog(QDialog):
    imported = Signal(object)

    def __init__(self, library: Any, *, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Import captions")
        self.setFixedWidth(DIALOG_WIDTH)
        self.library = library
        self.stats: Any = None
        #: The last preview (a dry run's stats) and the choices it was made for.
        self.plan: Any = None
        self._checked_choices: tuple[Any, ...] | None = None
        self._pending_choices: tuple[Any, ...] | None = None
        self._mode = ""
        self.runner = JobRunner(self)

        self.format = QComboBox()
        for fmt in IMPORT_FORMATS:
            self.format.addItem(fmt, fmt)
        self.format_help = wrapped("")
        self.source = QLineEdit()
        self.source.setPlaceholderText("file or folder to import from")
        folder_button = QPushButton("Folder…")
        file_button = QPushButton("File…")
        folder_button.clicked.connect(self.choose_folder)
        file_button.clicked.connect(self.choose_file)
        self.verified = QCheckBox("These captions were checked by a person")
        self.verified_help = wrapped(VERIFIED_EXPLANATION)
        self.replace = QCheckBox("These are my own edits: replace the captions in the library")
        self.replace_help = wrapped(REPLACE_EXPLANATION)
        # Wrapped, not elided: every number in it matters; a fixed height keeps the buttons in place.
        self.plan_label = lines_high(wrapped(""), 3)
        self.preview_button = QPushButton("Preview")
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setPlaceholderText("Rows that cannot be imported, and names not in the library, are listed here.")
        self.details.setFixedHeight(self.details.fontMetrics().lineSpacing() * 3 + 12)

        form = QFormLayout()
        form.addRow("Format", self.format)
        form.addRow("", self.format_help)
        source_row = QHBoxLayout()
        source_row.addWidget(self.source, 1)
        source_row.addWidget(folder_button)
        source_row.addWidget(file_button)
        form.addRow("Source", source_row)
        self.footer = JobFooter("Import")
        self.footer.buttons.insertWidget(1, self.preview_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.verified)
        layout.addWidget(self.verified_help)
        layout.addWidget(self.replace)
        layout.addWidget(self.replace_help)
        layout.addWidget(self.plan_label)
        layout.addWidget(self.details)
        layout.addWidget(self.footer)

        self.format.currentIndexChanged.connect(self._format_changed)
        self.format.currentIndexChanged.connect(self._choices_changed)
        self.source.textChanged.connect(self._choices_changed)
        self.verified.toggled.connect(self._choices_changed)
        self.replace.toggled.connect(self._replace_toggled)
        self.preview_button.clicked.connect(self.check)
        self.footer.start_button.clicked.connect(self.start)
        self.footer.cancel_button.clicked.connect(self.runner.cancel)
        self.footer.close_button.clicked.connect(self.close)
        self.runner.progress.connect(self.footer.show_progress)
        self.runner.finished.connect(self._on_finished)
        self.runner.failed.connect(lambda message, _detail: self._on_failed(message))
        self._format_changed()
        self._choices_changed()

    def _format_changed(self) -> None:
        self.format_help.setText(FORMAT_DESCRIPTIONS.get(self.format.currentData(), ""))

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Import from folder", start_folder("import"))
        if folder:
            remember_folder("import", folder)
            self.source.setText(folder)
            self.check()

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import from file", start_folder("import"))
        if path:
            remember_folder("import", path)
            self.source.setText(path)
            self.check()

    def choices(self) -> tuple[str, str, bool, bool]:
        return self.format.currentData(), self.source.text().strip(), self.verified.isChecked(), \
            self.replace.isChecked()

    def _replace_toggled(self, on: bool) -> None:
        # A replacement is a person's edit: it is always stored verified.
        if on:
            self.verified.setChecked(True)
        self.verified.setEnabled(not on)
        self._choices_changed()
        if on and self.source.text().strip() and not self.runner.running:
            self.check()

    def _choices_changed(self) -> None:
        self._checked_choices = None
        self.footer.start_button.setEnabled(False)
        self.details.clear()
        self.plan_label.setText("Not previewed yet: Preview shows how many captions would be added, kept "
                                "beside a person's, replaced and not matched, before anything is imported.")

    def _run(self, dry_run: bool) -> bool:
        if self.runner.running:
            return False
        fmt, src, verified, replace = choices = self.choices()
        if not src:
            self.footer.status.setText("Choose a file or folder to import from.")
            return False
        library = self.library
        self._mode = "check" if dry_run else "import"
        self._pending_choices = choices

        def work(progress: Any, cancel: Any) -> Any:
            from core.datasets.import_job import import_captions

            return import_captions(library, fmt, src, verified=verified, replace=replace, dry_run=dry_run,
                                   progress=progress, cancel=cancel)

        self.footer.set_running(True, f"Checking what importing {fmt} would change…" if dry_run
                                else f"Importing {fmt}…")
        self.preview_button.setEnabled(False)
        return self.runner.start(work)

    def check(self) -> bool:
        """Dry run: count what an import with the current choices would do, writing nothing."""
        return self._run(dry_run=True)

    def start(self) -> bool:
        """Import, once the preview for these exact choices was shown (else: preview first)."""
        if self._checked_choices != self.choices():
            return self.check()
        return self._run(dry_run=False)

    def _show_details(self, stats: Any) -> None:
        details = list(stats.problems)
        if stats.unmatched_names:
            details.append("Not in the library: " + ", ".join(stats.unmatched_names))
        self.details.setPlainText("\n".join(details))

    def _on_failed(self, message: str) -> None:
        self.preview_button.setEnabled(True)
        self.footer.finish(message)

    def _on_finished(self, stats: Any) -> None:
        self.preview_button.setEnabled(True)
        if self._mode == "check":
            self._on_checked(stats)
            return
        self.stats = stats
        self._checked_choices = None
        kind = "verified captions" if stats.verified else "captions"
        head = "Cancelled" if stats.cancelled else "Imported"
        replaced = f", {stats.replaced} replacing a person's caption" if stats.replace else ""
        result = (f"{head}: {stats.imported} {kind} added ({stats.kept_human} kept beside a person's caption"
                  f"{replaced}), {stats.unchanged} already there, {stats.unmatched} not in the library")
        # The whole sentence, wrapped where the preview was; the footer's one line just says it ended.
        self.plan_label.setText(result)
        self.footer.finish(f"{head}.")
        self.footer.start_button.setEnabled(False)
        self._show_details(stats)
        self.imported.emit(stats)

    def _on_checked(self, stats: Any) -> None:
        self.plan = stats
        if self._pending_choices != self.choices():  # changed while checking
            self.footer.finish("")
            self._choices_changed()
            return
        self._checked_choices = None if stats.cancelled else self._pending_choices
        unmatched = stats.unmatched + stats.ambiguous
        if stats.replace:
            self.plan_label.setText(
                f"Will replace {stats.replaced} captions a person wrote; {stats.current} more become current, "
                f"{stats.kept_human} kept beside a person's caption, {stats.unchanged} unchanged, "
                f"{unmatched} not in the library")
        else:
            self.plan_label.setText(
                f"Will add {stats.imported} captions ({stats.current} become current, {stats.kept_human} kept "
                f"beside a person's caption, none replaced), {stats.unchanged} already there, "
                f"{unmatched} not in the library")
        self._show_details(stats)
        self.footer.finish("Preview cancelled." if stats.cancelled else "Previewed: nothing imported yet.")
        self.footer.start_button.setEnabled(self._checked_choices is not None)

    def closeEvent(self, event: Any) -> None:
        self.runner.shutdown()
        super().closeEvent(event)
