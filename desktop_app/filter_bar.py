"""Search field and filters above the grid; produces an :class:`ImageFilter`.

Typing is debounced (250 ms) so a 100 000-image library is queried once per pause, not
once per key; the query itself runs on a pool thread (see the window).
"""

from __future__ import annotations

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from core.queries import ImageFilter, ModelKey, review_queue_filter

STATE_CHOICES: list[tuple[str, frozenset[str]]] = [
    ("All states", frozenset()),
    ("Uncaptioned", frozenset({"uncaptioned"})),
    ("Model (unverified)", frozenset({"model"})),
    ("Verified", frozenset({"verified"})),
    ("Imported", frozenset({"imported"})),
    ("Errors / missing", frozenset({"error", "missing"})),
]
SORT_CHOICES: list[tuple[str, str]] = [("Name", "name"), ("Date", "date"), ("Confidence", "confidence")]

#: Spin boxes show this (their minimum) as "any": a confidence bound that is not set.
_NO_BOUND = -10.0


class FilterBar(QWidget):
    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.search = QLineEdit()
        self.search.setObjectName("searchField")
        self.search.setPlaceholderText("Search captions (Ctrl+F)…")
        self.search.setClearButtonEnabled(True)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(250)
        self._debounce.timeout.connect(self.changed)
        self.search.textChanged.connect(lambda _text: self._debounce.start())
        self.search.returnPressed.connect(self._emit_now)

        self.state = QComboBox()
        for label, states in STATE_CHOICES:
            self.state.addItem(label, states)
        self.model = QComboBox()
        self.model.setMinimumContentsLength(10)
        self.model.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model.addItem("Any model", None)
        self.min_score = self._score_box("Lowest confidence to show (mean token log-prob)")
        self.max_score = self._score_box("Highest confidence to show")
        self.sort = QComboBox()
        for label, key in SORT_CHOICES:
            self.sort.addItem(f"Sort: {label}", key)
        self.descending = QCheckBox("Desc.")
        self.review = QToolButton()
        self.review.setText("Review queue")
        self.review.setCheckable(True)
        self.review.setToolTip("Model captions, least confident first (Ctrl+R)")
        self.review.toggled.connect(self._on_review)

        for widget in (self.state, self.model, self.sort):
            widget.currentIndexChanged.connect(self._emit_now)
        for box in (self.min_score, self.max_score):
            box.valueChanged.connect(lambda _v: self._debounce.start())
        self.descending.toggled.connect(self._emit_now)

        # Two rows keep the bar narrow enough for a laptop screen beside the panels.
        top = QHBoxLayout()
        top.addWidget(self.search, 1)
        top.addWidget(self.sort)
        top.addWidget(self.descending)
        top.addWidget(self.review)
        bottom = QHBoxLayout()
        bottom.addWidget(self.state)
        bottom.addWidget(self.model, 1)
        bottom.addWidget(QLabel("Conf."))
        bottom.addWidget(self.min_score)
        bottom.addWidget(QLabel("–"))
        bottom.addWidget(self.max_score)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 2)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addLayout(bottom)
        self._silent = False

    def _score_box(self, tip: str) -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setRange(_NO_BOUND, 0.0)
        box.setDecimals(2)
        box.setSingleStep(0.05)
        box.setSpecialValueText("any")
        box.setValue(_NO_BOUND)
        box.setToolTip(tip + "; 'any' = no bound")
        box.setKeyboardTracking(False)
        return box

    def _emit_now(self, *_args: object) -> None:
        if self._silent:
            return
        self._debounce.stop()
        self.changed.emit()

    def set_models(self, models: list[tuple[ModelKey, int]]) -> None:
        """Offer the model versions that wrote captions (keeps the current choice)."""
        chosen = self.model.currentData()
        self._silent = True
        try:
            self.model.clear()
            self.model.addItem("Any model", None)
            for key, count in models:
                self.model.addItem(f"{key.label()} ({count})", key)
            index = self.model.findData(chosen) if chosen is not None else 0
            self.model.setCurrentIndex(max(0, index))
        finally:
            self._silent = False

    def filter(self) -> ImageFilter:
        """The filter the widgets describe (the window adds the sidebar's folder)."""
        low = self.min_score.value()
        high = self.max_score.value()
        return ImageFilter(
            text=self.search.text(),
            states=self.state.currentData() or frozenset(),
            model=self.model.currentData(),
            min_score=None if low <= _NO_BOUND else low,
            max_score=None if high <= _NO_BOUND else high,
            sort=self.sort.currentData(),
            descending=self.descending.isChecked(),
        )

    def set_review_queue(self, on: bool) -> None:
        self.review.setChecked(on)

    def _on_review(self, on: bool) -> None:
        """Review queue: model captions, least confident first; off returns to all by name."""
        self._silent = True
        try:
            if on:
                queue = review_queue_filter(self.filter())
                self.state.setCurrentIndex(self._state_index(queue.states))
                self.sort.setCurrentIndex(self.sort.findData(queue.sort))
                self.descending.setChecked(queue.descending)
            else:
                self.state.setCurrentIndex(0)
                self.sort.setCurrentIndex(self.sort.findData("name"))
        finally:
            self._silent = False
        self._emit_now()

    @staticmethod
    def _state_index(states: frozenset[str]) -> int:
        return next(i for i, (_label, s) in enumerate(STATE_CHOICES) if s == states)

    def flush(self) -> None:
        """Apply a pending (debounced) change now."""
        if self._debounce.isActive():
            self._emit_now()
