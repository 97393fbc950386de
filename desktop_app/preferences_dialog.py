"""Edit → Preferences…: default model and generation settings, device, thumbnails, library.

Everything is stored through :class:`~desktop_app.settings.AppSettings` (the same keys
the Caption dialog reads and remembers), so a default chosen here is what the next
captioning job starts with.  The controller applies a new thumbnail size and opens a
new library location at once when the dialog is accepted.
"""

from __future__ import annotations

from typing import Any

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
from desktop_app.dialog_kit import DIALOG_WIDTH, wrapped
from desktop_app.settings import THUMBNAIL_SIZES, AppSettings

DEVICES = ("auto", "cpu", "cuda", "mps")
SIDECAR_NAMING = (
    "Sidecars are named IMG_1.xmp (Adobe, exiftool), or IMG_1.HEIC.xmp when that file already "
    "exists or another photo shares the name (darktable, digiKam), so existing sidecars are updated "
    "rather than duplicated."
)


class PreferencesDialog(QDialog):
    def __init__(self, settings: AppSettings, *, library_path: str | None = None, known_models: list[str] = (),
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Preferences")
        self.setFixedWidth(DIALOG_WIDTH)
        self.settings = settings
        defaults = settings.caption_defaults()
        generation = dict(defaults.get("settings") or {})

        self.model = QComboBox()
        self.model.setEditable(True)
        for name in dict.fromkeys([DEFAULT_MODEL, *known_models]):
            self.model.addItem(name)
        self.model.setCurrentText(str(defaults.get("model") or DEFAULT_MODEL))
        self.model.setToolTip("A Hugging Face model id, a model folder, or the name of a trained version")
        self.num_beams = self._spin(1, 16, int(generation.get("num_beams", 1)))
        self.max_new_tokens = self._spin(5, 200, int(generation.get("max_new_tokens", 30)))
        self.batch_size = self._spin(1, 256, int(defaults.get("batch_size") or 8))
        self.device = QComboBox()
        self.device.addItems(list(DEVICES))
        self.device.setCurrentText(str(defaults.get("device") or "auto"))
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
        form.addRow("Model", self.model)
        form.addRow("Beams", self.num_beams)
        form.addRow("Max new tokens", self.max_new_tokens)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Device", self.device)
        view = QGroupBox("Display and files")
        view_form = QFormLayout(view)
        view_form.addRow("Thumbnail size", self.thumbnail_size)
        library_row = QHBoxLayout()
        library_row.addWidget(self.library, 1)
        library_row.addWidget(browse)
        view_form.addRow("Library file", library_row)
        view_form.addRow("Sidecar naming", wrapped(SIDECAR_NAMING))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(captioning)
        layout.addWidget(view)
        layout.addWidget(buttons)

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

    def values(self) -> dict[str, Any]:
        return {
            "model": self.model.currentText().strip() or DEFAULT_MODEL,
            "settings": {"num_beams": self.num_beams.value(), "max_new_tokens": self.max_new_tokens.value()},
            "batch_size": self.batch_size.value(),
            "device": self.device.currentText(),
        }

    def save(self) -> None:
        """Store the choices (keeping other remembered caption settings such as the adapter)."""
        defaults = self.settings.caption_defaults()
        values = self.values()
        merged_settings = {**dict(defaults.get("settings") or {}), **values.pop("settings")}
        self.settings.set_caption_defaults({**defaults, **values, "settings": merged_settings})
        self.settings.thumbnail_size = int(self.thumbnail_size.currentData())
        if self.library.text().strip():
            self.settings.last_library = self.library.text().strip()
        self.settings.sync()

    def accept(self) -> None:
        self.save()
        super().accept()
