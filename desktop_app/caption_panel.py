"""The caption panel: edit the current caption, see the model's words and the history.

Each caption kind (:mod:`core.kinds`) is a tab of a compact tab bar, the caption first;
a tab's dot is that kind's state.  The shown kind's value is edited in the text editor
(alt text with a live length count, :func:`core.kinds.length_check`'s limits) or, for
keywords, in :class:`~desktop_app.keyword_chips.KeywordChips`; Save, Accept, the model's
words and the history are the shown kind's.

Pure view: it shows one :class:`~core.view_rows.CaptionDetails` per kind and reports
what the person asked for through signals; the image-review controller runs the operations (via
:class:`~desktop_app.review.CaptionUndoStack`) and reloads the panel when the library's
change notice names the image shown.

Layout rule: nothing in the panel may widen it.  Long paths and captions elide (the
full text is in the tooltip) or wrap anywhere, so selecting an image with a 200-character
path moves neither the panel nor the grid's columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from PySide6.QtCore import QEvent, QModelIndex, QObject, QSize, Qt, Signal
from PySide6.QtGui import QFont, QKeyEvent, QKeySequence, QPainter, QResizeEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.captions import format_confidence
from core.kinds import BUILTIN_KINDS, CAPTION, CaptionKind
from core.view_rows import CaptionDetails, CaptionInfo, ImageRow
from desktop_app.delegate import BADGES
from desktop_app.dialog_kit import wrapping_tooltip
from desktop_app.keyword_chips import KeywordChips, keyword_label
from desktop_app.kind_tabs import AltTextCount, KindTabs

SOURCE_LABELS = {"model": "model", "human": "person", "import": "import"}
#: The history's "By" column for a person's rows: what they did.
ACTION_LABELS = {
    "written by a person": "person, written",
    "edited by a person": "person, edited",
    "accepted by a person": "person, accepted",
    "restored by a person": "person, restored",
    "replaced by a person": "person, replaced",
}


class ElidedLabel(QLabel):
    """One line that elides in the middle ("2023/Summer…lake house 1096.jpg") to fit.

    Its size hint asks for no width, so a long text never widens the layout; the full
    text is the tooltip.
    """

    def __init__(self, text: str = "", parent: QWidget | None = None,
                 mode: Qt.TextElideMode = Qt.TextElideMode.ElideMiddle) -> None:
        super().__init__(parent)
        self._full = ""
        self._mode = mode
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(20)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt's name
        self._full = text
        self.setToolTip(wrapping_tooltip(text))
        super().setText(text)

    def full_text(self) -> str:
        return self._full

    def shown_text(self) -> str:
        """The text as painted at the current width (elided when it does not fit)."""
        return self.fontMetrics().elidedText(self._full, self._mode, max(0, self.contentsRect().width()))

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(20, super().minimumSizeHint().height())

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(20, super().sizeHint().height())

    def paintEvent(self, _event: object) -> None:  # noqa: N802
        painter = QPainter(self)
        painter.setFont(self.font())
        painter.setPen(self.palette().color(self.foregroundRole()))
        painter.drawText(self.contentsRect(), int(self.alignment() | Qt.AlignmentFlag.AlignVCenter), self.shown_text())

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802
        super().resizeEvent(event)
        self.update()


def _no_widen(label: QLabel) -> QLabel:
    """A wrapping label that asks for little width (text passes through :func:`_breakable`).

    Its horizontal policy stays Preferred: Ignored would also drop its height-for-width,
    and the wrapped lines would be squeezed.
    """
    label.setWordWrap(True)
    label.setMinimumWidth(20)
    return label


def _breakable(text: str) -> str:
    """*text* with zero-width spaces after "/", "_" and "-" so long names can wrap."""
    return text.replace("/", "/\u200b").replace("_", "_\u200b").replace("-", "-\u200b")


class _WrappedRows(QStyledItemDelegate):
    """Row heights that fit each caption wrapped in its column's width.

    QTreeView asks the delegate for a row's height without the column's width (so a
    wrapped text would get one line); this gives it that width.
    """

    def __init__(self, tree: QTreeWidget) -> None:
        super().__init__(tree)
        self.tree = tree

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:  # noqa: N802
        hint = super().sizeHint(option, index)
        # Less the item's text margins on both sides (the style's focus frame margin + 1, twice).
        width = self.tree.columnWidth(index.column()) - 14
        if width <= 0:
            return hint
        text = str(index.data() or "")
        height = option.fontMetrics.boundingRect(0, 0, width, 100_000, int(Qt.TextFlag.TextWordWrap), text).height()
        return QSize(hint.width(), max(hint.height(), height + 8))


class _UndoPassThrough(QObject):
    """Lets Ctrl+Z / Ctrl+Shift+Z reach the window's caption undo while the editor has
    nothing of its own to undo (e.g. right after "save edit and next" moved on)."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
        if event.type() == QEvent.Type.ShortcutOverride and isinstance(event, QKeyEvent):
            # A text editor's document, or the keyword field (a QLineEdit) itself.
            document = watched.document() if hasattr(watched, "document") else watched
            if event.matches(QKeySequence.StandardKey.Undo) and not document.isUndoAvailable():
                event.ignore()
                return True
            if event.matches(QKeySequence.StandardKey.Redo) and not document.isRedoAvailable():
                event.ignore()
                return True
        return False


class CaptionPanel(QWidget):
    save_requested = Signal()
    #: Accept the shown kind's value (of the selection, when several photos are selected).
    accept_requested = Signal()
    #: A caption id from the history (or the model's caption) to make current again.
    revert_requested = Signal(int)
    #: The person is about to leave the shown kind with unsaved text: save it now.
    commit_requested = Signal()
    #: The shown kind changed (its name).
    kind_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.image_id: int | None = None
        self._row: ImageRow | None = None
        self._details: CaptionDetails | None = None
        self._by_kind: dict[str, CaptionDetails] = {}
        self._loaded_text = ""
        #: The kind shown and edited.
        self.kind = CAPTION
        self.kind_tabs = KindTabs()
        self.kind_tabs.currentChanged.connect(self._on_tab_changed)

        self.title = ElidedLabel("No image selected")
        self.title.setObjectName("captionTitle")
        title_font = QFont(self.title.font())
        title_font.setBold(True)
        self.title.setFont(title_font)
        self.badge = QLabel()
        self.badge.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.provenance = _no_widen(QLabel())
        self.provenance.setStyleSheet("color: palette(placeholder-text);")
        # Two lines at most, always that tall: the editor below never jumps (all of it in the tooltip).
        self.provenance.setFixedHeight(self.provenance.fontMetrics().lineSpacing() * 2 + 2)
        self.provenance.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        #: Inline messages ("a caption cannot be empty") instead of a modal box.
        self.message = _no_widen(QLabel())
        self.message.setObjectName("captionMessage")
        self.message.setStyleSheet("color: #c0392b;")
        self.message.hide()

        self.editor = QPlainTextEdit()
        self.editor.setObjectName("captionEditor")
        self.editor.setPlaceholderText("Select a photo to see and write its caption")
        self.editor.setTabChangesFocus(True)
        self.editor.setMinimumHeight(60)
        self.editor.setMaximumHeight(110)
        self.editor.textChanged.connect(self._update_buttons)
        self.editor.textChanged.connect(self.clear_message)
        self._undo_pass_through = _UndoPassThrough(self)
        self.editor.installEventFilter(self._undo_pass_through)
        self.keywords = KeywordChips()
        self.keywords.entry.installEventFilter(self._undo_pass_through)
        self.keywords.changed.connect(self._update_buttons)
        self.keywords.changed.connect(self.clear_message)
        #: The shown kind's editor: the text editor, or the keyword chips.
        self.value_stack = QStackedWidget()
        self.value_stack.addWidget(self.editor)
        self.value_stack.addWidget(self.keywords)
        self.value_stack.setMinimumHeight(60)
        self.value_stack.setMaximumHeight(110)
        #: Alt text's live length ("87 / 125") in the editor's corner, so showing it moves nothing.
        self.alt_count = AltTextCount(self.editor)
        self.editor.textChanged.connect(self._update_count)

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
        self.model_text = _no_widen(QLabel("—"))
        self.model_text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.model_meta = _no_widen(QLabel())
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
        self.history.setHeaderLabels(["When", "By", "Conf.", "Caption"])
        # Whole captions, wrapped in their column (each row as tall as its text): readable
        # without hovering; the tooltip keeps the provenance.
        self.history.setWordWrap(True)
        self.history.setItemDelegate(_WrappedRows(self.history))
        self.history.setUniformRowHeights(False)
        self.history.setTextElideMode(Qt.TextElideMode.ElideNone)
        self.history.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.history.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.history.header().sectionResized.connect(lambda *_: self.history.doItemsLayout())
        self.history.setMinimumHeight(70)
        self.history.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Ignored)
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
        layout.addWidget(self.kind_tabs)
        layout.addWidget(self.provenance)
        layout.addWidget(self.value_stack)
        layout.addWidget(self.message)
        layout.addLayout(buttons)
        layout.addWidget(self.model_box)
        layout.addWidget(QLabel("History"))
        layout.addWidget(self.history, 1)
        self.setMinimumWidth(240)
        # Wrapped labels reserve two lines each: a layout's minimum height ignores how
        # many lines a label wraps to, so without this the splitter would squeeze them
        # (and the height must not jump from image to image).
        line = self.fontMetrics().lineSpacing()
        for label, lines in ((self.provenance, 2), (self.model_text, 2), (self.model_meta, 3)):
            label.setMinimumHeight(lines * line + 2)
            label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.set_kinds(list(BUILTIN_KINDS.values()))
        self.show_image(None, None)

    def sizeHint(self) -> QSize:  # noqa: N802
        # Width from the splitter, not from the content.  The (empty) history asks for
        # no height, so the preview above gets the spare height.
        return QSize(360, super().sizeHint().height())

    def show_message(self, text: str) -> None:
        """An inline note under the editor (e.g. why a caption was not saved)."""
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def clear_message(self) -> None:
        if self.message.isVisible():
            self.show_message("")

    # -- state -------------------------------------------------------------------------

    def text(self) -> str:
        """The shown kind's value as typed (keywords as the kind stores them)."""
        if self._kind_spec().value_type == "keywords":
            return self.keywords.text()
        return self.editor.toPlainText().strip()

    def _kind_spec(self) -> CaptionKind:
        return next((k for k in self.kind_tabs.kinds if k.name == self.kind), BUILTIN_KINDS[CAPTION])

    def value_editor(self) -> QWidget:
        """The widget that takes the shown kind's typing: the text editor or the keyword field."""
        return self.keywords.entry if self.value_stack.currentWidget() is self.keywords else self.editor

    def kind_names(self) -> list[str]:
        return self.kind_tabs.names()

    def set_kinds(self, kinds: Sequence[CaptionKind]) -> None:
        """The library's kinds, one tab each (the caption first); keeps the shown kind if it stays."""
        kind = self.kind_tabs.set_kinds(kinds, self.kind)
        if kind != self.kind:
            self.kind = kind
            self._show_kind()

    def set_kind(self, kind: str) -> bool:
        """Show *kind* (as if its tab was clicked); False when it stays (unknown, or unsaved text refused)."""
        if kind not in self.kind_names():
            return False
        self.kind_tabs.show_kind(kind)
        return self.kind == kind

    def _on_tab_changed(self, index: int) -> None:
        kind = self.kind_tabs.tabData(index)
        if kind is None or kind == self.kind:
            return
        if self.is_dirty():
            self.commit_requested.emit()  # leaving a kind saves it, as leaving a photo does
            if self.is_dirty():  # refused (e.g. empty): stay, nothing is lost
                self.kind_tabs.show_kind(self.kind, quietly=True)
                return
        self.kind = kind
        self._show_kind()
        self.kind_changed.emit(kind)

    def is_dirty(self) -> bool:
        """The person typed something that is not saved yet."""
        return self.image_id is not None and self.text() != self._loaded_text

    def selected_history_id(self) -> int | None:
        items = self.history.selectedItems()
        return items[0].data(0, Qt.ItemDataRole.UserRole) if items else None

    def show_image(self, row: ImageRow | None, details: CaptionDetails | None,
                   kinds: Mapping[str, CaptionDetails] | None = None) -> None:
        """Show *row*'s values (None clears the panel): *details* is its caption's, *kinds*
        every kind's (the caption's taken from *details*)."""
        self.image_id = row.id if row is not None else None
        self._row = row
        self._by_kind = dict(kinds or {})
        if details is not None:
            self._by_kind[CAPTION] = details
        self._show_kind()

    def kind_row(self, kind: str) -> ImageRow | None:
        """The shown photo's row with its value of *kind* (the grid's row may hold another kind's)."""
        row = self._row
        if row is None or kind not in self._by_kind:
            return row
        current = self._by_kind[kind].current
        if current is None:
            return replace(row, caption_id=None, caption=None, source=None, score=None, model_name=None)
        return replace(row, caption_id=current.id, caption=current.text, source=current.source,
                       score=current.score, model_name=current.model_name)

    def kind_state(self, kind: str) -> str | None:
        """The display state of the shown photo's *kind* (None: no photo)."""
        row = self.kind_row(kind)
        return row.state if row is not None else None

    def _show_kind(self) -> None:
        """Fill the editor, badge, model box and history with the shown kind's value."""
        row = self._row
        details = self._details = self._by_kind.get(self.kind)
        current = details.current if details is not None else None
        spec = self._kind_spec()
        noun = spec.label.lower() if self.kind != CAPTION else "caption"
        self._loaded_text = current.text if current is not None else ""
        keywords = spec.value_type == "keywords"
        for widget in (self.editor, self.keywords):
            widget.blockSignals(True)
        self.editor.setPlainText("" if keywords else self._loaded_text)
        self.keywords.set_text(self._loaded_text if keywords else "")
        for widget in (self.editor, self.keywords):
            widget.blockSignals(False)
        self.value_stack.setCurrentWidget(self.keywords if keywords else self.editor)
        # Only a readable file can be captioned: an unreadable or missing one has no
        # picture to describe.
        readable = row is not None and row.image_state == "ok"
        self.editor.setEnabled(readable)
        self.keywords.setEnabled(readable)
        self.editor.setPlaceholderText(
            f"Select a photo to see and write its {noun}" if row is None
            else f"No {noun} yet — type one and press Ctrl+S" if readable
            else "This file cannot be read, so it cannot be captioned"
        )
        self.model_box.setTitle(f"Model's {noun}")
        self.use_model_button.setText(f"Use model's {noun}")
        self._update_count()
        self.kind_tabs.set_states({kind: self.kind_state(kind) for kind in self.kind_names()})
        self.show_message("")
        if row is None:
            self.title.setText("No image selected")
            self.badge.clear()
            self.badge.setToolTip("")
            self.badge.hide()  # an empty coloured pill says nothing
            self.provenance.clear()
            self.provenance.setToolTip("")
        else:
            self.title.setText(row.rel_path)
            self.title.setToolTip(wrapping_tooltip(row.path))
            kind_row = self.kind_row(self.kind) or row
            label, color = badge_text(kind_row)
            self.badge.setText(label)
            self.badge.show()
            self.badge.setToolTip(badge_tooltip(kind_row) if self.kind == CAPTION
                                  else f"{spec.label}: {badge_tooltip(kind_row)}")
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
            self.provenance.setText(_breakable(" · ".join(lines)))
            self.provenance.setToolTip("\n".join(lines))
        self._show_model(details)
        self._show_history(details)
        self._update_buttons()

    def _readable(self, text: str) -> str:
        """A value as a line of text: keywords as "beach, animals › dogs"."""
        if self._kind_spec().value_type != "keywords":
            return text
        return ", ".join(keyword_label(tuple(line.split("|"))) for line in text.splitlines() if line)

    def _update_count(self) -> None:
        if self.kind != "alt_text" or self._row is None:
            self.alt_count.hide()
            return
        self.alt_count.count(self.editor.toPlainText().strip())
        self.alt_count.show()

    def _show_model(self, details: CaptionDetails | None) -> None:
        model = details.latest_model if details is not None else None
        if model is None:
            noun = "caption" if self.kind == CAPTION else self._kind_spec().label.lower()
            self.model_text.setText(f"— (no model {noun} yet)")
            self.model_meta.clear()
        else:
            self.model_text.setText(self._readable(model.text))
            lines = model.provenance_lines()
            # Compact (wrapped " · " list) so the panel stays short; one fact a line in the tooltip.
            self.model_meta.setText(_breakable(" · ".join(lines)))
            self.model_meta.setToolTip("\n".join(lines))

    def _show_history(self, details: CaptionDetails | None) -> None:
        self.history.clear()
        if details is None:
            return
        items = []
        for caption in reversed(details.history):  # newest first
            items.append(self._history_item(caption))
            items[-1].setText(3, self._readable(caption.text))  # keywords on one line
        self.history.addTopLevelItems(items)
        for column in (0, 1, 2):
            self.history.resizeColumnToContents(column)
        self.history.setColumnWidth(1, min(self.history.columnWidth(1), 100))

    @staticmethod
    def _history_item(caption: CaptionInfo) -> QTreeWidgetItem:
        # Short (date over time) so the caption column keeps its width in a narrow panel;
        # the full date and time are in the tooltip's provenance.
        when = f"{caption.created_at:%Y-%m-%d}\n{caption.created_at:%H:%M}" if caption.created_at else ""
        if caption.source == "model":
            # The model's short name (the full id, adapter and settings are in the tooltip).
            by = (caption.model_name or "model").rstrip("/").rsplit("/", 1)[-1]
            if caption.adapter:
                by += " + " + caption.adapter.rstrip("/").rsplit("/", 1)[-1]
            restyle = caption.record.get("restyle") if caption.record is not None else None
            if isinstance(restyle, dict):
                by += " → " + str(restyle.get("version") or restyle.get("restyler") or "?").rstrip("/").rsplit("/", 1)[-1]
            if "bulk" in caption.action:
                by += ", replaced"
        else:
            by = ACTION_LABELS.get(caption.action, SOURCE_LABELS.get(caption.source, caption.source))
        score = format_confidence(caption.score)
        item = QTreeWidgetItem([when, by, score, caption.text])
        item.setData(0, Qt.ItemDataRole.UserRole, caption.id)
        tooltip = [caption.text, "", *caption.provenance_lines()]
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


def badge_text(row: ImageRow) -> tuple[str, str]:
    """The badge's words and colour: "model 87%" for a scored model caption."""
    label, color = BADGES.get(row.state, (row.state, "#555"))
    if row.state == "model" and row.score is not None:
        label = f"model {format_confidence(row.score)}"
    return label, color


def badge_tooltip(row: ImageRow) -> str:
    if row.state == "model" and row.score is not None:
        return (
            f"Model caption, not reviewed yet. Confidence {format_confidence(row.score)}"
            f" (mean token log-probability {row.score:.3f})"
        )
    return {
        "uncaptioned": "No caption yet",
        "model": "Model caption, not reviewed yet",
        "verified": "Verified by a person (used for training)",
        "imported": "Imported caption, not reviewed yet",
        "changed": "Changed since captioned: the picture changed after it was captioned; its caption "
        "is in history (restore it if it still fits) and the next caption run writes a new one",
        "error": "This file cannot be read" + (f": {row.error}" if row.error else ""),
        "missing": "The file is missing from disk",
    }.get(row.state, row.state)
