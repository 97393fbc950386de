"""Edit → Preferences…: the current model, generation settings, device, thumbnails, library.

The model is the open library's current model (:mod:`core.training.current`, the one the
CLI uses too): picking a trained version activates it, picking a base model deactivates
versions and makes it the library's base model.  Everything else is stored through
:class:`~desktop_app.app_settings.AppSettings` (the same keys the Caption dialog reads and
remembers), so a default chosen here is what the next captioning job starts with.  The
controller applies a new thumbnail size and opens a new library location at once when the
dialog is accepted.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from core.captioning import DEFAULT_MODEL  # torch-free: core.captioning imports torch lazily
from core.captioning.job_spec import RUNTIMES, CaptionJobSpec
from core.training.current import current_model, library_base_model, use_base_model
from core.training.versions import VersionError, list_versions, set_active
from desktop_app.app_settings import THUMBNAIL_SIZES, AppSettings
from desktop_app.dialog_kit import DIALOG_WIDTH, fit_on_screen, wrapped

if TYPE_CHECKING:
    from core.library import Library

DEVICES = ("auto", "cpu", "cuda", "mps")
#: The sidecar naming choices, as people know them (core.metadata.SIDECAR_NAMINGS).
SIDECAR_NAMING_LABELS = {
    "auto": "By file type: IMG_1.xmp for RAW, IMG_1.heic.xmp for others",
    "stem": "IMG_1.xmp (Lightroom, Capture One: RAW files only)",
    "full": "IMG_1.jpg.xmp (digiKam, darktable)",
}
SIDECAR_NAMING_NOTE = (
    "A photo that shares its name with a RAW file or another photo always gets the full "
    "name, so a JPEG's caption never lands in its RAW file's sidecar."
)


class PreferencesDialog(QDialog):
    def __init__(self, settings: AppSettings, *, library_path: str | None = None, known_models: list[str] = (),
                 library: Library | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Preferences")
        self.setFixedWidth(DIALOG_WIDTH)
        self.settings = settings
        #: The open library (its current model is edited here); self.library is the path field.
        self.open_library = library
        spec = settings.caption_spec()
        self.current = current_model(library) if library is not None else None
        self._versions = [v.name for v in list_versions(library)] if library is not None else []

        self.model = QComboBox()
        self.model.setEditable(True)
        base = library_base_model(library) if library is not None else None
        for name in dict.fromkeys([*self._versions, *filter(None, [base]), DEFAULT_MODEL, *known_models]):
            self.model.addItem(name)
        self.model.setCurrentText(self.current.model if self.current is not None else DEFAULT_MODEL)
        self.model.setEnabled(library is not None)
        self.model.setToolTip("The library's current model: a trained version (activates it), or a base model "
                              "(a Hugging Face model id or a model folder)" if library is not None
                              else "Open a library to choose its model")
        self.model_note = wrapped(f"Now: {self.current.describe()}. The CLI captions with the same model."
                                  if self.current is not None else "Each library has its own current model.")
        self.num_beams = self._spin(1, 16, spec.generation.num_beams)
        self.max_new_tokens = self._spin(5, 200, spec.generation.max_new_tokens)
        self.batch_size = self._spin(1, 256, spec.batch_size)
        self.device = QComboBox()
        self.device.addItems(list(DEVICES))
        self.device.setCurrentText(spec.device)
        self.runtime = QComboBox()
        self.runtime.addItems(list(RUNTIMES))
        self.runtime.setCurrentText(spec.runtime)
        self.runtime.setToolTip("openvino: the vision tower (BLIP and most VLMs; BLIP, SmolVLM and Qwen2-VL: the "
                                "text model too) on OpenVINO on the CPU (pip install 'captiondesk[openvino]'); "
                                "openvino-bf16: the tower in bf16 and the text model in bf16, faster on CPUs with bf16 "
                                "hardware (avx512_bf16 or AMX; refused elsewhere), captions may differ from fp32's; "
                                "openvino-int8: in int8 (vision towers: weights and activations; text models: int8 weights); "
                                "auto: whatever measured faster for the model")
        self.sidecar_naming = QComboBox()
        for naming, label in SIDECAR_NAMING_LABELS.items():
            self.sidecar_naming.addItem(label, naming)
        self.sidecar_naming.setCurrentIndex(max(0, self.sidecar_naming.findData(settings.sidecar_naming)))
        self.thumbnail_size = QComboBox()
        for size in THUMBNAIL_SIZES:
            self.thumbnail_size.addItem(f"{size} px", size)
        self.thumbnail_size.setCurrentIndex(THUMBNAIL_SIZES.index(settings.thumbnail_size))
        self.library = QLineEdit(library_path or settings.last_library or "")
        self.library.setCursorPosition(0)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self.choose_library)

        captioning = QGroupBox("Captioning defaults")
        form = QFormLayout(captioning)
        form.addRow("Current model", self.model)
        form.addRow("", self.model_note)
        form.addRow("Beams", self.num_beams)
        form.addRow("Max new tokens", self.max_new_tokens)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Device", self.device)
        form.addRow("CPU runtime", self.runtime)
        view = QGroupBox("Display and files")
        view_form = QFormLayout(view)
        view_form.addRow("Thumbnail size", self.thumbnail_size)
        library_row = QHBoxLayout()
        library_row.addWidget(self.library, 1)
        library_row.addWidget(browse)
        view_form.addRow("Library file", library_row)
        view_form.addRow("Sidecar names", self.sidecar_naming)
        view_form.addRow("", wrapped(SIDECAR_NAMING_NOTE))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(captioning)
        layout.addWidget(view)
        layout.addWidget(buttons)
        # Qt would cap the first size at 2/3 of the screen (466 px on 1024x700), squeezing the notes.
        fit_on_screen(self)

    @staticmethod
    def _spin(low: int, high: int, value: int) -> QSpinBox:
        box = QSpinBox()
        box.setRange(low, high)
        box.setValue(min(max(value, low), high))
        return box

    def choose_library(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Library file", self.library.text(),
                                              "CaptionDesk library (*.db);;All files (*)",
                                              options=QFileDialog.Option.DontConfirmOverwrite)
        if path:
            self.library.setText(path)

    def caption_spec(self) -> CaptionJobSpec:
        """The remembered caption spec with these choices (the adapter and other settings kept)."""
        spec = self.settings.caption_spec()
        generation = replace(spec.generation, num_beams=self.num_beams.value(),
                             max_new_tokens=self.max_new_tokens.value())
        return spec.with_(generation=generation, batch_size=self.batch_size.value(), device=self.device.currentText(),
                         runtime=self.runtime.currentText())

    def save_model(self) -> None:
        """Make the picked model the library's current one (a version is activated)."""
        picked = self.model.currentText().strip()
        if self.open_library is None or self.current is None or not picked or picked == self.current.model:
            return
        if picked in self._versions:
            set_active(self.open_library, picked)
        else:
            use_base_model(self.open_library, picked)

    def save(self) -> None:
        """Store the choices: the current model, the default caption spec, display and file settings."""
        self.save_model()
        self.settings.set_caption_spec(self.caption_spec())
        self.settings.sidecar_naming = str(self.sidecar_naming.currentData())
        self.settings.thumbnail_size = int(self.thumbnail_size.currentData())
        if self.library.text().strip():
            self.settings.last_library = self.library.text().strip()
        self.settings.sync()

    def accept(self) -> None:
        try:
            self.save()
        except VersionError as exc:
            # A typed model that is neither a folder nor a hub id: say so and stay open to fix it.
            self.model_note.setText(str(exc))
            return
        super().accept()
