"""The photo information panel: size, camera, date, exposure, and the description and
keywords already in the file's metadata (:func:`core.metadata.read.read_photo_info`).

It reads the file on the pool, only while it is shown (a tab beside the caption panel),
and only for the photo still current when the read ends.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, QThreadPool
from PySide6.QtWidgets import QFormLayout, QLabel, QScrollArea, QVBoxLayout, QWidget

from core.view_rows import ImageRow
from desktop_app.operations import ReadOp

#: The rows, in order: (key, label).
FIELDS = (
    ("file", "File"),
    ("size", "Size"),
    ("camera", "Camera"),
    ("lens", "Lens"),
    ("taken", "Taken"),
    ("exposure", "Exposure"),
    ("description", "Description in the file"),
    ("keywords", "Keywords in the file"),
    ("other", "Other text in the file"),
    ("problem", "Could not read"),
)


def human_size(size: int | None) -> str:
    if size is None:
        return ""
    for unit, step in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= step:
            return f"{size / step:.1f} {unit}"
    return f"{size} bytes"


class MetadataPanel(QWidget):
    def __init__(self, pool: QThreadPool, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("metadataPanel")
        self.pool = pool
        self.image_id: int | None = None
        self._row: ImageRow | None = None
        self._shown_for: int | None = None
        self.values: dict[str, QLabel] = {}
        form_widget = QWidget()
        form = QFormLayout(form_widget)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for key, label in FIELDS:
            value = QLabel()
            value.setObjectName(f"info_{key}")
            value.setWordWrap(True)
            value.setMinimumWidth(20)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.values[key] = value
            form.addRow(label, value)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(form_widget)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)
        self._form = form
        self.show_values({})

    def follow(self, row: ImageRow | None) -> None:
        """The current photo changed: read it now if the panel is shown, else when it is."""
        self._row = row
        self.image_id = row.id if row is not None else None
        self._shown_for = None  # the file may have changed since (metadata written into it)
        if self.isVisible():
            self.refresh()

    def refresh(self) -> None:
        row = self._row
        if row is None:
            self._shown_for = None
            self.show_values({"file": "No photo selected"})
            return
        if self._shown_for == row.id:
            return
        self._shown_for = row.id
        self.show_values({"file": row.rel_path, "size": "Reading…"})
        path, image_id = row.path, row.id

        def work() -> Any:
            from core.metadata.read import read_photo_info

            return read_photo_info(path)

        def done(info: Any) -> None:
            if self.image_id == image_id:
                self.show_info(row, info)

        def failed(exc: BaseException) -> None:
            if self.image_id == image_id:
                self.show_values({"file": row.rel_path, "problem": f"{type(exc).__name__}: {exc}"})

        ReadOp(work, success=done, failure=failed).run(self.pool)

    def show_info(self, row: ImageRow, info: Any) -> None:
        dims = f"{info.width}×{info.height}" if info.width and info.height else ""
        size = " · ".join(p for p in (dims, human_size(info.file_size)) if p)
        other = "\n".join(f"{kind}: {text}" for kind, text in (info.kinds or {}).items() if kind != "caption")
        self.show_values({
            "file": row.rel_path,
            "size": size,
            "camera": info.camera,
            "lens": info.lens,
            "taken": info.taken,
            "exposure": info.exposure,
            "description": info.description,
            "keywords": ", ".join(info.keywords),
            "other": other,
            "problem": info.problem,
        })

    def show_values(self, values: dict[str, Any]) -> None:
        """Show *values* by key; a row without a value is hidden, so the panel lists only what is known."""
        for key, label in self.values.items():
            text = str(values.get(key) or "")
            label.setText(text)
            self._form.setRowVisible(label, bool(text))

    def showEvent(self, event: Any) -> None:  # noqa: N802
        super().showEvent(event)
        self.refresh()
