"""The caption panel's per-kind pieces: the kinds' tab bar and alt text's length count.

:class:`KindTabs` is a compact tab bar, one tab a caption kind (:mod:`core.kinds`, the
caption first), each with a dot in its display state's colour; :class:`AltTextCount` is
the live "87 / 125" that turns to the note colour over
:data:`core.kinds.ALT_TEXT_NOTE_CHARS` and to the warning colour over
:data:`core.kinds.ALT_TEXT_WARNING_CHARS` (the limits :func:`core.kinds.length_check` uses).
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QEvent, QObject, QSize, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QLabel, QPlainTextEdit, QSizePolicy, QTabBar

from core.kinds import ALT_TEXT_NOTE_CHARS, ALT_TEXT_WARNING_CHARS, CAPTION, CaptionKind
from desktop_app.delegate import BADGES

#: Tab labels shorter than a kind's label, so the built-in kinds fit the panel's narrowest width.
SHORT_LABELS = {"extended_description": "Long desc."}
#: The caption first, then alt text and keywords (what most photos get), then the rest as defined.
TAB_ORDER = {"caption": 0, "alt_text": 1, "keywords": 2, "title": 3, "extended_description": 4}
#: The alt-text count's colours: over the note limit, over the warning limit.
NOTE_COLOR = "#b7791f"
WARNING_COLOR = "#c0392b"


def state_dot(color: str) -> QIcon:
    pixmap = QPixmap(10, 10)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setBrush(QColor(color))
    painter.setPen(Qt.PenStyle.NoPen)
    painter.drawEllipse(1, 1, 8, 8)
    painter.end()
    return QIcon(pixmap)


class KindTabs(QTabBar):
    """One tab a kind; the tab's data is the kind's name."""

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("kindTabs")
        self.setDocumentMode(True)
        self.setExpanding(False)
        self.setUsesScrollButtons(True)
        # Whole words; the tabs that do not fit scroll (the caption, alt text and keywords come first).
        self.setElideMode(Qt.TextElideMode.ElideNone)
        self.setDrawBase(False)
        self.setIconSize(QSize(8, 8))
        # Compact tabs; the shown one underlined (not bold, so no tab changes width).
        self.setStyleSheet("QTabBar::tab { padding: 3px 6px; border: none; border-bottom: 2px solid transparent; }"
                           " QTabBar::tab:selected { border-bottom: 2px solid palette(highlight);"
                           " color: palette(highlight); }")
        # The tabs scroll rather than widen the panel.
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.kinds: list[CaptionKind] = []

    def names(self) -> list[str]:
        return [k.name for k in self.kinds]

    def set_kinds(self, kinds: Sequence[CaptionKind], shown: str) -> str:
        """One tab per kind, the caption first; returns the kind now shown (*shown* if it stays)."""
        kinds = sorted(kinds, key=lambda k: TAB_ORDER.get(k.name, len(TAB_ORDER)))
        if [k.name for k in kinds] == self.names():
            self.kinds = list(kinds)
            return shown
        self.kinds = list(kinds)
        self.blockSignals(True)
        while self.count():
            self.removeTab(0)
        for kind in kinds:
            index = self.addTab(SHORT_LABELS.get(kind.name, kind.label))
            self.setTabData(index, kind.name)
        if shown not in self.names():
            shown = CAPTION
        self.setCurrentIndex(self.names().index(shown))
        self.blockSignals(False)
        return shown

    def show_kind(self, kind: str, *, quietly: bool = False) -> None:
        self.blockSignals(quietly)
        self.setCurrentIndex(self.names().index(kind))
        self.blockSignals(False)

    def set_states(self, states: dict[str, str | None]) -> None:
        """Each tab's dot and tooltip: its kind's display state (None: no photo shown)."""
        for index, kind in enumerate(self.kinds):
            state = states.get(kind.name)
            if state is None:
                self.setTabIcon(index, QIcon())
                self.setTabToolTip(index, kind.label)
            else:
                self.setTabIcon(index, state_dot(BADGES.get(state, (state, "#555"))[1]))
                self.setTabToolTip(index, f"{kind.label}: {state}")


def alt_text_count(text: str) -> tuple[str, str]:
    """The alt-text count's words ("87 / 125") and level (``""``, ``note``, ``warning``)."""
    n = len(text)
    level = "warning" if n > ALT_TEXT_WARNING_CHARS else "note" if n > ALT_TEXT_NOTE_CHARS else ""
    return f"{n} / {ALT_TEXT_NOTE_CHARS}", level


class AltTextCount(QLabel):
    """The live length of alt text, in the bottom-right corner of *editor* (over its text,
    so it takes no room of its own); ``level`` is ``""``, ``note`` or ``warning``."""

    def __init__(self, editor: QPlainTextEdit) -> None:
        super().__init__(editor)
        self._editor = editor
        editor.installEventFilter(self)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.setObjectName("altTextCount")
        self.level = ""
        self.setToolTip(f"Screen readers may cut alt text after {ALT_TEXT_NOTE_CHARS} characters; "
                        f"over {ALT_TEXT_WARNING_CHARS} it reads as a description")
        self.hide()

    def count(self, text: str) -> None:
        words, self.level = alt_text_count(text)
        color = {"note": NOTE_COLOR, "warning": WARNING_COLOR}.get(self.level, "palette(placeholder-text)")
        self.setText(words)
        self.setStyleSheet(f"color: {color}; background: palette(base); padding: 0 3px;"
                           + (" font-weight: bold;" if self.level else ""))
        self._place()

    def _place(self) -> None:
        self.adjustSize()
        area = self._editor.viewport().geometry()
        self.move(area.right() - self.width() - 2, area.bottom() - self.height() - 1)
        self.raise_()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if watched is self._editor and event.type() == QEvent.Type.Resize:
            self._place()
        return False
