"""The keyword editor: one chip a keyword (× removes it) and a field that adds them.

Enter or a comma adds what was typed (parsed by :func:`core.kinds.parse_keywords`, so
"Beach, Sunset" adds two); the field completes from the library's keyword vocabulary
(:func:`core.kinds.keyword_vocabulary`); a hierarchy ``a|b`` shows as "a › b".  The
value is the kind's stored text (:func:`core.kinds.format_keywords`), so the panel saves
it like any other kind.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QPoint, QRect, QSize, QStringListModel, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QCompleter,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLayout,
    QLayoutItem,
    QLineEdit,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from core.kinds import Keyword, format_keywords, parse_keywords

HIERARCHY_MARK = " › "


def keyword_label(keyword: Keyword) -> str:
    """How a person reads a keyword: "animals › dogs" for ``animals|dogs``."""
    return HIERARCHY_MARK.join(keyword)


class FlowLayout(QLayout):
    """Items left to right, wrapping to the next line: the chips."""

    def __init__(self, parent: QWidget | None = None, spacing: int = 3) -> None:
        super().__init__(parent)
        self._items: list[QLayoutItem] = []
        self._spacing = spacing
        self.setContentsMargins(0, 0, 0, 0)

    def addItem(self, item: QLayoutItem) -> None:  # noqa: N802 - Qt's name
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int) -> QLayoutItem | None:  # noqa: N802
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int) -> QLayoutItem | None:  # noqa: N802
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    def expandingDirections(self) -> Qt.Orientation:  # noqa: N802
        return Qt.Orientation(0)

    def hasHeightForWidth(self) -> bool:  # noqa: N802
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802
        return self._place(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect: QRect) -> None:  # noqa: N802
        super().setGeometry(rect)
        self._place(rect, move=True)

    def sizeHint(self) -> QSize:  # noqa: N802
        return self.minimumSize()

    def minimumSize(self) -> QSize:  # noqa: N802
        size = QSize(20, 0)
        for item in self._items:
            size = size.expandedTo(QSize(min(item.minimumSize().width(), 120), item.minimumSize().height()))
        return size

    def _place(self, rect: QRect, *, move: bool) -> int:
        rect = rect.adjusted(2, 2, -2, -2)
        x, y, line = rect.x(), rect.y(), 0
        for item in self._items:
            hint = item.sizeHint()
            width = min(hint.width(), rect.width())
            if x > rect.x() and x + width > rect.right() + 1:
                x, y, line = rect.x(), y + line + self._spacing, 0
            if move:
                item.setGeometry(QRect(QPoint(x, y), QSize(width, hint.height())))
            x += width + self._spacing
            line = max(line, hint.height())
        return y + line - rect.y() + 4


class KeywordChip(QFrame):
    """One keyword: its words and a × that removes it."""

    remove_requested = Signal(object)

    def __init__(self, keyword: Keyword, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.keyword = keyword
        self.setObjectName("keywordChip")
        self.setStyleSheet("#keywordChip { background: palette(midlight); border: 1px solid palette(mid);"
                           " border-radius: 9px; }")
        self.label = QLabel(keyword_label(keyword))
        self.label.setToolTip("|".join(keyword))
        self.remove = QToolButton()
        self.remove.setText("×")
        self.remove.setAutoRaise(True)
        self.remove.setToolTip(f"Remove “{keyword_label(keyword)}”")
        self.remove.setFixedSize(16, 16)
        self.remove.clicked.connect(lambda: self.remove_requested.emit(self.keyword))
        layout = QHBoxLayout(self)
        layout.setContentsMargins(7, 0, 2, 0)
        layout.setSpacing(2)
        layout.addWidget(self.label)
        layout.addWidget(self.remove)


class _Entry(QLineEdit):
    """The field: Enter and a comma add, Backspace in an empty field removes the last chip."""

    commit = Signal()
    backspace_empty = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        popup = self.completer().popup() if self.completer() else None
        enter = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        # Ctrl+Enter stays the window's "accept and next"; an open completion list takes Enter itself.
        if (enter and self.text().strip() and not (popup and popup.isVisible())
                and not event.modifiers() & Qt.KeyboardModifier.ControlModifier):
            self.commit.emit()
            return
        if event.text() == ",":
            self.commit.emit()
            return
        if event.key() == Qt.Key.Key_Backspace and not self.text():
            self.backspace_empty.emit()
            return
        super().keyPressEvent(event)


class KeywordChips(QWidget):
    """Chips for the keywords and a field with completion; ``changed`` on every change."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._keywords: list[Keyword] = []
        self._chips: list[KeywordChip] = []
        self.chip_area = QWidget()
        self.flow = FlowLayout(self.chip_area)
        self.scroll = QScrollArea()
        self.scroll.setObjectName("keywordChips")
        self.scroll.setWidget(self.chip_area)
        self.scroll.setWidgetResizable(True)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        # The field is the flow's last item, after the chips, as in a tag editor.
        self.entry = _Entry(self.chip_area)
        self.entry.setObjectName("keywordEntry")
        self.entry.setPlaceholderText("Add a keyword…")
        self.entry.setToolTip("Enter or a comma adds it; a|b is a hierarchy (shown a › b); "
                              "Backspace in an empty field removes the last keyword")
        self.entry.setFrame(False)
        self.entry.setMinimumWidth(100)
        self.flow.addWidget(self.entry)
        self._vocabulary = QStringListModel(self)
        completer = QCompleter(self._vocabulary, self)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        completer.setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        self.entry.setCompleter(completer)
        completer.activated.connect(lambda text: (self.entry.setText(text), self.add_typed()))
        self.entry.commit.connect(self.add_typed)
        self.entry.textChanged.connect(lambda _text: self.changed.emit())
        self.entry.backspace_empty.connect(self._remove_last)
        self.scroll.setFrameShape(QFrame.Shape.StyledPanel)
        self.chip_area.setBackgroundRole(self.entry.backgroundRole())
        self.chip_area.setAutoFillBackground(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.scroll, 1)

    # -- the value -------------------------------------------------------------------------

    def keywords(self) -> list[Keyword]:
        """The chips' keywords, and what is typed but not yet added."""
        pending = [k for k in parse_keywords(self.entry.text()) if k not in self._keywords]
        return [*self._keywords, *pending]

    def text(self) -> str:
        """The value as the keywords kind stores it."""
        return format_keywords(self.keywords())

    def set_text(self, text: str) -> None:
        """Show a stored value (no ``changed``)."""
        self.entry.setText("")  # not clear(): that stays in the field's own undo history
        self._set(parse_keywords(text), notify=False)

    def set_vocabulary(self, words: Sequence[str]) -> None:
        """What the field completes: the library's keywords, as they are typed (``a|b``)."""
        self._vocabulary.setStringList(list(words))

    def chip_labels(self) -> list[str]:
        return [chip.label.text() for chip in self._chips]

    # -- changes -------------------------------------------------------------------------

    def add_typed(self) -> None:
        typed = parse_keywords(self.entry.text())
        self.entry.setText("")  # not clear(): that stays in the field's own undo history
        new = [k for k in typed if k not in self._keywords]
        if new:
            self._set([*self._keywords, *new])

    def remove_keyword(self, keyword: Keyword) -> None:
        if keyword in self._keywords:
            self._set([k for k in self._keywords if k != keyword])

    def _remove_last(self) -> None:
        if self._keywords:
            self._set(self._keywords[:-1])

    def _set(self, keywords: list[Keyword], *, notify: bool = True) -> None:
        self._keywords = list(keywords)
        for chip in self._chips:
            self.flow.removeWidget(chip)
            chip.deleteLater()
        self._chips = []
        self.flow.removeWidget(self.entry)
        for keyword in self._keywords:
            chip = KeywordChip(keyword, self.chip_area)
            chip.remove_requested.connect(self.remove_keyword)
            self.flow.addWidget(chip)
            chip.show()
            self._chips.append(chip)
        self.flow.addWidget(self.entry)
        self.chip_area.updateGeometry()
        if notify:
            self.changed.emit()

    def setEnabled(self, enabled: bool) -> None:  # noqa: N802 - Qt's name
        super().setEnabled(enabled)
        self.entry.setEnabled(enabled)
