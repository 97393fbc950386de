"""The caption panel: edit the current caption, see the model's words and the history.

Pure view: it shows a :class:`~core.queries.CaptionDetails` and reports what the
person asked for through signals; the window runs the operations (via
:class:`~desktop_app.review.CaptionEditor`) and reloads the panel afterwards.
"""

from __future__ import annotations

import json

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop_app.delegate import BADGES
from core.queries import CaptionDetails, CaptionInfo, ImageRow

SOURCE_LABELS = {"model": "model", "human": "person", "import": "import"}


def _flatten(settings: dict, prefix: str = "") -> list[tuple[str, object]]:
    """``{"generation": {"num_beams": 3}}`` → ``[("num_beams", 3)]``: readable provenance."""
    items: list[tuple[str, object]] = []
    for key, value in settings.items():
        if isinstance(value, dict):
            items.extend(_flatten(value, prefix))
        else:
            items.append((f"{prefix}{key}", value))
    return items


class CaptionPanel(QWidget):
    save_requested = Signal()
    accept_requested = Signal()
    #: A caption id from the history (or the model's caption) to make current again.
    revert_requested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.image_id: int | None = None
        self._details: CaptionDetails | None = None
        self._loaded_text = ""

        self.title = QLabel("No image selected")
        title_font = QFont(self.title.font())
        title_font.setBold(True)
        self.title.setFont(title_font)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.badge = QLabel()
        self.provenance = QLabel()
        self.provenance.setWordWrap(True)
        self.provenance.setStyleSheet("color: palette(placeholder-text);")

        self.editor = QPlainTextEdit()
        self.editor.setObjectName("captionEditor")
        self.editor.setPlaceholderText("No caption yet — type one and press Ctrl+S")
        self.editor.setTabChangesFocus(True)
        self.editor.setMinimumHeight(60)
        self.editor.setMaximumHeight(110)
        self.editor.textChanged.connect(self._update_buttons)

        self.save_button = QPushButton("Save")
        self.save_button.setToolTip("Save the text as the verified caption (Ctrl+S)")
        self.save_button.clicked.connect(self.save_requested)
        self.accept_button = QPushButton("Accept")
        self.accept_button.setToolTip("Mark the current caption as verified (Ctrl+Shift+A)")
        self.accept_button.clicked.connect(self.accept_requested)
        self.revert_button = QPushButton("Revert to selected")
        self.revert_button.setToolTip("Make the caption selected in the history current again")
        self.revert_button.clicked.connect(self._revert_selected)

        buttons = QHBoxLayout()
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.accept_button)
        buttons.addStretch(1)
        buttons.addWidget(self.revert_button)

        self.model_box = QGroupBox("Model's caption")
        self.model_text = QLabel("—")
        self.model_text.setWordWrap(True)
        self.model_text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.model_meta = QLabel()
        self.model_meta.setWordWrap(True)
        self.model_meta.setStyleSheet("color: palette(placeholder-text);")
        self.use_model_button = QPushButton("Use model's caption")
        self.use_model_button.clicked.connect(self._use_model)
        model_layout = QVBoxLayout(self.model_box)
        model_layout.addWidget(self.model_text)
        model_layout.addWidget(self.model_meta)
        model_row = QHBoxLayout()
        model_row.addStretch(1)
        model_row.addWidget(self.use_model_button)
        model_layout.addLayout(model_row)

        self.history = QTreeWidget()
        self.history.setObjectName("captionHistory")
        self.history.setHeaderLabels(["When", "By", "Score", "Caption"])
        self.history.setRootIsDecorated(False)
        self.history.setAlternatingRowColors(True)
        self.history.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.history.header().setStretchLastSection(True)
        self.history.itemSelectionChanged.connect(self._update_buttons)
        self.history.itemDoubleClicked.connect(lambda *_: self._revert_selected())

        header = QHBoxLayout()
        header.addWidget(self.title, 1)
        header.addWidget(self.badge)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(header)
        layout.addWidget(self.provenance)
        layout.addWidget(self.editor)
        layout.addLayout(buttons)
        layout.addWidget(self.model_box)
        layout.addWidget(QLabel("History"))
        layout.addWidget(self.history, 1)
        self.show_image(None, None)

    # -- state -------------------------------------------------------------------------

    def text(self) -> str:
        return self.editor.toPlainText().strip()

    def is_dirty(self) -> bool:
        """The person typed something that is not saved yet."""
        return self.image_id is not None and self.text() != self._loaded_text

    def selected_history_id(self) -> int | None:
        items = self.history.selectedItems()
        return items[0].data(0, Qt.ItemDataRole.UserRole) if items else None

    def show_image(self, row: ImageRow | None, details: CaptionDetails | None) -> None:
        """Show *row*'s captions (None clears the panel)."""
        self.image_id = row.id if row is not None else None
        self._details = details
        current = details.current if details is not None else None
        self._loaded_text = current.text if current is not None else ""
        self.editor.blockSignals(True)
        self.editor.setPlainText(self._loaded_text)
        self.editor.blockSignals(False)
        self.editor.setEnabled(row is not None and row.image_state != "missing" or bool(current))
        if row is None:
            self.title.setText("No image selected")
            self.badge.clear()
            self.provenance.clear()
        else:
            self.title.setText(row.rel_path)
            self.title.setToolTip(row.path)
            label, color = BADGES.get(row.state, (row.state, "#555"))
            self.badge.setText(label)
            self.badge.setStyleSheet(
                f"background:{color}; color:white; border-radius:4px; padding:1px 6px; font-weight:bold;"
            )
            lines = []
            if current is not None:
                lines.append(f"Current: {current.provenance()}")
            if row.error:
                lines.append(f"Error: {row.error}")
            if row.width and row.height:
                lines.append(f"{row.width}×{row.height}")
            self.provenance.setText(" · ".join(lines))
        self._show_model(details)
        self._show_history(details)
        self._update_buttons()

    def _show_model(self, details: CaptionDetails | None) -> None:
        model = details.latest_model if details is not None else None
        if model is None:
            self.model_text.setText("— (no model caption yet)")
            self.model_meta.clear()
        else:
            self.model_text.setText(model.text)
            meta = model.provenance()
            if model.settings:
                meta += " · " + ", ".join(f"{k}={v}" for k, v in _flatten(model.settings) if v is not None)
            if model.created_at is not None:
                meta += f" · {model.created_at:%Y-%m-%d %H:%M}"
            self.model_meta.setText(meta)

    def _show_history(self, details: CaptionDetails | None) -> None:
        self.history.clear()
        if details is None:
            return
        items = []
        for caption in reversed(details.history):  # newest first
            items.append(self._history_item(caption))
        self.history.addTopLevelItems(items)
        for column in (0, 1, 2):
            self.history.resizeColumnToContents(column)
        self.history.setColumnWidth(1, min(self.history.columnWidth(1), 100))

    @staticmethod
    def _history_item(caption: CaptionInfo) -> QTreeWidgetItem:
        when = f"{caption.created_at:%Y-%m-%d %H:%M}" if caption.created_at else ""
        if caption.source == "model":
            # The model's short name (the full id, adapter and settings are in the tooltip).
            by = (caption.model_name or "model").rstrip("/").rsplit("/", 1)[-1]
            if caption.adapter:
                by += " + " + caption.adapter.rstrip("/").rsplit("/", 1)[-1]
        else:
            by = SOURCE_LABELS.get(caption.source, caption.source)
        score = f"{caption.score:.3f}" if caption.score is not None else ""
        item = QTreeWidgetItem([when, by, score, caption.text])
        item.setData(0, Qt.ItemDataRole.UserRole, caption.id)
        tooltip = [caption.text, caption.provenance()]
        if caption.model_name:
            tooltip.append(f"model: {caption.model_name}" + (f"\nadapter: {caption.adapter}" if caption.adapter else ""))
        if caption.settings:
            tooltip.append("settings: " + json.dumps(caption.settings, sort_keys=True))
        if caption.origin:
            tooltip.append(f"origin: {caption.origin}")
        if caption.created_at:
            tooltip.append(f"written {caption.created_at:%Y-%m-%d %H:%M:%S} UTC")
        for column in range(4):
            item.setToolTip(column, "\n".join(tooltip))
        if caption.is_current:
            font = item.font(0)
            font.setBold(True)
            for column in range(4):
                item.setFont(column, font)
        return item

    def _update_buttons(self) -> None:
        details = self._details
        current = details.current if details is not None else None
        has_image = self.image_id is not None
        self.save_button.setEnabled(has_image and self.is_dirty() and bool(self.text()))
        self.accept_button.setEnabled(has_image and current is not None and current.source != "human")
        selected = self.selected_history_id()
        self.revert_button.setEnabled(
            has_image and selected is not None and (current is None or selected != current.id)
        )
        model = details.latest_model if details is not None else None
        self.use_model_button.setEnabled(
            has_image and model is not None and (current is None or model.id != current.id)
        )

    def _revert_selected(self) -> None:
        caption_id = self.selected_history_id()
        if caption_id is not None and self.revert_button.isEnabled():
            self.revert_requested.emit(caption_id)

    def _use_model(self) -> None:
        model = self._details.latest_model if self._details is not None else None
        if model is not None:
            self.revert_requested.emit(model.id)
