"""File → Import captions…: :func:`core.importer.import_captions` (as ``captiondesk import``).

Format, source (a file or a folder), and whether a person checked the captions.  The
import runs in the background with progress and Cancel; a person's caption in the
library is never replaced (core keeps an imported one beside it).
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
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from core.importer import IMPORT_FORMATS
from desktop_app.dialog_kit import DIALOG_WIDTH, JobFooter, JobRunner, wrapped

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


class ImportDialog(QDialog):
    imported = Signal(object)

    def __init__(self, library: Any, *, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Import captions")
        self.setFixedWidth(DIALOG_WIDTH)
        self.library = library
        self.stats: Any = None
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

        form = QFormLayout()
        form.addRow("Format", self.format)
        form.addRow("", self.format_help)
        source_row = QHBoxLayout()
        source_row.addWidget(self.source, 1)
        source_row.addWidget(folder_button)
        source_row.addWidget(file_button)
        form.addRow("Source", source_row)
        self.footer = JobFooter("Import")
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.verified)
        layout.addWidget(self.verified_help)
        layout.addWidget(self.footer)

        self.format.currentIndexChanged.connect(self._format_changed)
        self.footer.start_button.clicked.connect(self.start)
        self.footer.cancel_button.clicked.connect(self.runner.cancel)
        self.footer.close_button.clicked.connect(self.close)
        self.runner.progress.connect(self.footer.show_progress)
        self.runner.finished.connect(self._on_finished)
        self.runner.failed.connect(lambda message, _detail: self.footer.finish(message))
        self._format_changed()

    def _format_changed(self) -> None:
        self.format_help.setText(FORMAT_DESCRIPTIONS.get(self.format.currentData(), ""))

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Import from folder")
        if folder:
            self.source.setText(folder)

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import from file")
        if path:
            self.source.setText(path)

    def start(self) -> bool:
        src = self.source.text().strip()
        if not src:
            self.footer.status.setText("Choose a file or folder to import from.")
            return False
        fmt, verified, library = self.format.currentData(), self.verified.isChecked(), self.library

        def work(progress: Any, cancel: Any) -> Any:
            from core.importer import import_captions

            return import_captions(library, fmt, src, verified=verified, progress=progress, cancel=cancel)

        self.footer.set_running(True, f"Importing {fmt}…")
        return self.runner.start(work)

    def _on_finished(self, stats: Any) -> None:
        self.stats = stats
        kind = "verified captions" if self.verified.isChecked() else "captions"
        head = "Cancelled" if stats.cancelled else "Imported"
        self.footer.finish(
            f"{head}: {stats.imported} {kind} added ({stats.kept_human} kept beside a person's caption), "
            f"{stats.unchanged} already there, {stats.unmatched} not in the library")
        details = list(stats.problems[:20])
        if stats.unmatched_names:
            details.append("Not in the library: " + ", ".join(stats.unmatched_names))
        self.footer.status.setToolTip(self.footer.status.full_text() + ("\n" + "\n".join(details) if details else ""))
        self.imported.emit(stats)

    def closeEvent(self, event: Any) -> None:
        self.runner.shutdown()
        super().closeEvent(event)
