"""File → Export dataset…: the formats of :mod:`core.datasets.writers`, over the chosen images.

For sidecar and kohya the trainer choice lays the dataset out so that trainer finds every
image (:data:`core.datasets.naming.CONSUMERS`), the first choice being OneTrainer.

Before anything is written the dialog shows how many images each split would get
(:func:`core.datasets.selection.count_export_split`, on a worker thread, refreshed as the choices
change).  The export itself is :func:`core.datasets.export_job.export_dataset` — the function
``captiondesk export`` calls — on a :class:`~desktop_app.dialog_kit.JobRunner` with
progress and Cancel (a cancelled export leaves nothing at the destination).  When it is
done, "Show folder" opens the dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from core.datasets.naming import CAPTION_EXTENSIONS
from core.datasets.writers import EXPORT_FORMATS
from core.splits import DEFAULT_SEED, DEFAULT_TEST_RATIO, DEFAULT_VAL_RATIO, MIN_TEST
from desktop_app.dialog_kit import (
    DIALOG_WIDTH,
    ElidedLabel,
    JobFooter,
    JobRunner,
    Scope,
    ScopePicker,
    lines_high,
    remember_folder,
    show_folder,
    start_folder,
    wrapped,
)

FORMAT_DESCRIPTIONS = {
    "imagefolder": "Hugging Face imagefolder: train/ and validation/ with metadata.jsonl",
    "csv": "captions.csv (file name, caption, split, provenance) beside the image folders",
    "coco": "COCO captions JSON per split (annotations/captions_train.json …)",
    "sidecar": "each image with a caption file of the same name: choose the trainer below",
    "parquet": "parquet files with the images inside (loads after the photos move)",
    "kohya": "kohya sd-scripts: <repeats>_captions folders and a dataset_train.toml",
}
#: Trainers a sidecar/kohya export can be laid out for (core.datasets.naming.CONSUMERS); "" keeps folders and formats.
TRAINER_LABELS = {
    "onetrainer": "OneTrainer (flat, formats it reads)",
    "ai-toolkit": "ai-toolkit (flat, JPEG/PNG/WebP)",
    "kohya": "kohya sd-scripts (flat, formats it reads)",
    "": "Any tool (keep sub-folders and formats)",
}
#: Which format to pick for which trainer (README "Which export for which trainer").
TRAINER_HELP = (
    "OneTrainer, ai-toolkit: sidecar for that trainer. kohya sd-scripts: the kohya format "
    "(or sidecar for kohya as a dataset config's image_dir)."
)


class ExportDialog(QDialog):
    """Choose format, captions, images, split and destination; export in the background."""

    #: The finished export's stats (core.datasets.export_job.ExportStats).
    exported = Signal(object)

    def __init__(self, library: Any, scope: Scope, *, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export dataset")
        self.setFixedWidth(DIALOG_WIDTH)
        self.library = library
        self.stats: Any = None
        self.runner = JobRunner(self)
        self._preview = JobRunner(self)
        self._preview_dirty = False

        self.format = QComboBox()
        for fmt in EXPORT_FORMATS:
            self.format.addItem(fmt, fmt)
        # Two lines whatever the format: switching formats moves no control under the pointer.
        self.format_help = lines_high(wrapped(""), 2)
        self.caption_extension = QComboBox()
        self.caption_extension.addItems(list(CAPTION_EXTENSIONS))
        self.trainer = QComboBox()
        for key, label in TRAINER_LABELS.items():
            self.trainer.addItem(label, key)
        self.variants = QCheckBox("Write caption variants one per line (OneTrainer)")
        self.verified_only = QRadioButton("Only captions a person wrote or accepted (verified)")
        self.all_captioned = QRadioButton("Every image with a caption (model captions too)")
        self.verified_only.setChecked(True)
        self.scope_picker = ScopePicker(scope)
        self.val_ratio = QDoubleSpinBox()
        self.val_ratio.setRange(0.0, 0.9)
        self.val_ratio.setSingleStep(0.05)
        self.val_ratio.setDecimals(2)
        self.val_ratio.setValue(DEFAULT_VAL_RATIO)
        self.test_ratio = QDoubleSpinBox()
        self.test_ratio.setRange(0.0, 0.5)
        self.test_ratio.setSingleStep(0.05)
        self.test_ratio.setDecimals(2)
        self.test_ratio.setValue(DEFAULT_TEST_RATIO)
        self.test_ratio.setToolTip(f"A test split is written only when at least {MIN_TEST} photos land in it.")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setValue(DEFAULT_SEED)
        self.out = QLineEdit()
        self.out.setPlaceholderText("a new folder outside the library")
        self.out.textChanged.connect(self.out.setToolTip)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self.choose_out)
        self.overwrite = QCheckBox("Replace an earlier CaptionDesk export in this folder")
        self.summary = ElidedLabel("Counting…")
        self.show_button = QPushButton("Show folder")
        keep_place = self.show_button.sizePolicy()
        keep_place.setRetainSizeWhenHidden(True)
        self.show_button.setSizePolicy(keep_place)
        self.show_button.setVisible(False)
        self.show_button.clicked.connect(lambda: self.stats is not None and show_folder(self.stats.out))

        what = QFormLayout()
        what.addRow("Format", self.format)
        what.addRow("", self.format_help)
        what.addRow("For trainer", self.trainer)
        what.addRow("", wrapped(TRAINER_HELP))
        what.addRow("Caption files", self.caption_extension)
        what.addRow("", self.variants)
        captions = QGroupBox("Captions")
        captions_layout = QVBoxLayout(captions)
        captions_layout.addWidget(self.verified_only)
        captions_layout.addWidget(self.all_captioned)
        images = QGroupBox("Images")
        QVBoxLayout(images).addWidget(self.scope_picker)
        split = QFormLayout()
        split.addRow("Validation share", self.val_ratio)
        split.addRow("Test share", self.test_ratio)
        split.addRow("Split seed", self.seed)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out, 1)
        out_row.addWidget(browse)
        split.addRow("Destination", out_row)
        split.addRow("", self.overwrite)
        split.addRow("Will write", self.summary)

        self.footer = JobFooter("Export")
        self.footer.buttons.insertWidget(1, self.show_button)
        layout = QVBoxLayout(self)
        layout.addLayout(what)
        layout.addWidget(captions)
        layout.addWidget(images)
        layout.addLayout(split)
        layout.addWidget(self.footer)

        self.footer.start_button.clicked.connect(self.start)
        self.footer.cancel_button.clicked.connect(self.runner.cancel)
        self.footer.close_button.clicked.connect(self.close)
        self.runner.progress.connect(self.footer.show_progress)
        self.runner.finished.connect(self._on_finished)
        self.runner.failed.connect(self._on_failed)
        self._preview.finished.connect(self._on_preview)
        self._preview.failed.connect(lambda message, _detail: self._on_preview(message))
        self.format.currentIndexChanged.connect(self._format_changed)
        self.trainer.currentIndexChanged.connect(self._format_changed)
        for signal in (self.verified_only.toggled, self.scope_picker.changed, self.val_ratio.valueChanged,
                       self.test_ratio.valueChanged, self.seed.valueChanged):
            signal.connect(self.refresh_summary)
        for signal in (self.format.currentIndexChanged, self.caption_extension.currentIndexChanged,
                       self.verified_only.toggled, self.scope_picker.changed, self.val_ratio.valueChanged,
                       self.test_ratio.valueChanged, self.seed.valueChanged, self.out.textChanged,
                       self.overwrite.toggled):
            signal.connect(self._clear_result)
        self._format_changed()
        self.refresh_summary()

    # -- choices ------------------------------------------------------------------------

    def only(self) -> str:
        return "verified" if self.verified_only.isChecked() else "captioned"

    def _clear_result(self, *_args: Any) -> None:
        """New settings: the last export's result line no longer describes them."""
        if not self.runner.running:
            self.footer.status.setText("")
            self.show_button.setVisible(False)

    def _format_changed(self) -> None:
        fmt = self.format.currentData()
        self.format_help.setText(FORMAT_DESCRIPTIONS.get(fmt, ""))
        layout_format = fmt in ("sidecar", "kohya")
        self.trainer.setEnabled(layout_format)
        trainer = self.trainer.currentData()
        # OneTrainer and ai-toolkit read .txt caption files only.
        if trainer in ("onetrainer", "ai-toolkit"):
            self.caption_extension.setCurrentText(".txt")
        self.caption_extension.setEnabled(fmt == "sidecar" and trainer not in ("onetrainer", "ai-toolkit"))
        self.variants.setEnabled(fmt == "sidecar")

    def choose_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export into folder", start_folder("export"))
        if folder:
            remember_folder("export", folder)
            # An empty chosen folder is fine; otherwise export into a new sub-folder of it.
            path = Path(folder)
            if path.exists() and any(path.iterdir()):
                path = path / f"dataset-{self.format.currentData()}"
            self.out.setText(str(path))

    def refresh_summary(self) -> None:
        """Count what would be exported, on the worker thread (again if choices changed meanwhile)."""
        if self._preview.running:
            self._preview_dirty = True
            return
        self._preview_dirty = False
        only, key, ratio, seed = self.only(), self.scope_picker.key(), self.val_ratio.value(), self.seed.value()
        test_ratio = self.test_ratio.value()
        scope, library = self.scope_picker.scope, self.library

        def work(_progress: Any, _cancel: Any) -> tuple[dict[str, int], int]:
            from core.datasets.selection import folder_scope, plan_export_split

            args = scope.core_arguments(key, library)
            folder = folder_scope(library.db, args["folder"]) if "folder" in args else None
            return plan_export_split(library.db, only=only, folder=folder, image_ids=args.get("image_ids"),
                                      val_ratio=ratio, seed=seed, test_ratio=test_ratio)

        self._preview.start(work)

    def _on_preview(self, counts: Any) -> None:
        if self._preview_dirty:
            self.refresh_summary()
            return
        if isinstance(counts, str):
            self.summary.setText(counts)
            return
        counts, candidates = counts
        self.preview_counts = counts
        total = counts["train"] + counts["validation"] + counts["test"]
        if counts["test"]:
            test = f", {counts['test']} test"
        elif self.test_ratio.value() > 0:
            test = f" (no test split: {candidates} of the {MIN_TEST} photos it needs)"
        else:
            test = ""
        self.summary.setText(
            f"{total} images: {counts['train']} train, {counts['validation']} validation{test}"
            if total else "No images with these choices")

    # -- the job ------------------------------------------------------------------------

    def start(self) -> bool:
        out = self.out.text().strip()
        if not out:
            self.footer.status.setText("Choose a destination folder first.")
            return False
        if self.runner.running:
            return False
        fmt, only, key = self.format.currentData(), self.only(), self.scope_picker.key()
        ratio, seed, test_ratio = self.val_ratio.value(), self.seed.value(), self.test_ratio.value()
        extension, overwrite = self.caption_extension.currentText(), self.overwrite.isChecked()
        layout_format = fmt in ("sidecar", "kohya")
        trainer = (self.trainer.currentData() or None) if layout_format else None
        variants = fmt == "sidecar" and self.variants.isChecked()
        scope, library = self.scope_picker.scope, self.library
        self.show_button.setVisible(False)

        def work(progress: Any, cancel: Any) -> Any:
            from core.datasets.export_job import export_dataset

            return export_dataset(library, fmt, out, only=only, val_ratio=ratio, seed=seed, test_ratio=test_ratio,
                                  caption_extension=extension, consumer=trainer, variants=variants,
                                  overwrite=overwrite, progress=progress,
                                  cancel=cancel, **scope.core_arguments(key, library))

        self.footer.set_running(True, f"Exporting {fmt}…")
        return self.runner.start(work)

    def _on_finished(self, stats: Any) -> None:
        self.stats = stats
        if stats.cancelled:
            self.footer.finish("Cancelled: nothing was written.")
        elif stats.out is None:
            self.footer.finish("Nothing to export with these choices.")
        else:
            left_out = stats.missing + stats.errors + stats.skipped
            note = f"; {left_out} left out (see the log)" if left_out else ""
            test = f", test {stats.test}" if stats.test else ""
            self.footer.finish(f"Exported {stats.exported} images (train {stats.train}, "
                               f"validation {stats.validation}{test}){note}")
            self.footer.status.setToolTip(f"{stats.out}\n" + "\n".join(stats.problems[:20]))
            self.show_button.setVisible(True)
        self.exported.emit(stats)

    def _on_failed(self, message: str, _detail: str) -> None:
        self.footer.finish(message)

    def closeEvent(self, event: Any) -> None:
        self.runner.shutdown()
        self._preview.shutdown()
        super().closeEvent(event)
