"""Search field and filters above the grid; produces an :class:`ImageFilter`.

Typing is debounced (250 ms) so a 100 000-image library is queried once per pause, not
once per key; the query itself runs on a pool thread (see the window).
"""

from __future__ import annotations

from PySide6.QtCore import QAbstractItemModel, Qt, QTimer, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from core.captions import confidence_percent, score_for_percent
from core.kinds import BUILTIN_KINDS, CAPTION, CaptionKind
from core.queries import ImageFilter, ModelKey, review_queue_filter

STATE_CHOICES: list[tuple[str, frozenset[str]]] = [
    ("All states", frozenset()),
    ("Uncaptioned", frozenset({"uncaptioned"})),
    ("Model (unverified)", frozenset({"model"})),
    ("Verified", frozenset({"verified"})),
    ("Imported", frozenset({"imported"})),
    ("Picture changed", frozenset({"changed"})),
    ("Errors / missing", frozenset({"error", "missing"})),
    ("To review", frozenset({"model", "changed"})),
]
#: Item tooltips where the short label needs more words.
_STATE_TIPS = {
    frozenset({"changed"}): "Changed since captioned: the picture at this path changed after it was captioned",
    frozenset({"model", "changed"}): "The review queue: model captions, then pictures changed since captioned",
}
SORT_CHOICES: list[tuple[str, str]] = [("Name", "name"), ("Date", "date"), ("Confidence", "confidence")]
#: The search box's modes: label, meaning space (None: words), tooltip (one word each: the
#: bar must leave the search field room at 1024 pixels).
SEARCH_MODES: list[tuple[str, str | None, str]] = [
    ("Words", None, "Finds the words in captions and in file and folder names"),
    ("Meaning", "text", "Finds captions that mean the search, in other words too (ranked by closeness)"),
    ("Picture", "image", "Finds photos whose picture matches the search, uncaptioned ones too"),
]



class PercentBox(QSpinBox):
    """A confidence bound in percent; *any_value* (0 for "from", 100 for "to") reads "any"."""

    def __init__(self, any_value: int, tip: str) -> None:
        super().__init__()
        self.any_value = any_value
        self.setRange(0, 100)
        self.setSingleStep(5)
        self.setValue(any_value)
        self.setToolTip(tip + " ('any' = no bound). Confidence = exp(mean token log-probability).")
        self.setKeyboardTracking(False)

    def textFromValue(self, value: int) -> str:  # noqa: N802 - Qt's name
        return "any" if value == self.any_value else f"{value}%"

    def valueFromText(self, text: str) -> int:  # noqa: N802
        text = text.replace("%", "").strip()
        if text.lower() == "any" or not text:
            return self.any_value
        return int(float(text))

    def validate(self, text: str, pos: int) -> QValidator.State:
        bare = text.replace("%", "").strip().lower()
        if bare == "any" or (bare.isdigit() and 0 <= int(bare) <= 100):
            return QValidator.State.Acceptable
        if "any".startswith(bare) or bare.isdigit():
            return QValidator.State.Intermediate
        return QValidator.State.Invalid

    def score_bound(self) -> float | None:
        """The bound as a score (mean token log-prob) for :class:`ImageFilter`; None = any."""
        value = self.value()
        return None if value == self.any_value else score_for_percent(value)

    def set_score_bound(self, score: float | None) -> None:
        percent = confidence_percent(score)
        self.setValue(self.any_value if percent is None else round(percent))


#: The review button's words while the queue is off (on: "n of N reviewed").
REVIEW_OFF = "Review queue"


class FilterBar(QWidget):
    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.search = QLineEdit()
        self.search.setObjectName("searchField")
        # Short enough not to be cut at the narrowest grid (the tooltip says what it searches).
        self.search.setPlaceholderText("Search (Ctrl+F)…")
        self.search.setClearButtonEnabled(True)
        self.search.setToolTip("Finds words in the captions and in file and folder names (e.g. IMG_1001, Lisbon)")
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(250)
        self._debounce.timeout.connect(self.changed)
        self.search.textChanged.connect(lambda _text: self._debounce.start())
        self.search.returnPressed.connect(self._emit_now)

        # Words (FTS) or meaning: captions' meaning, or the pictures themselves (uncaptioned too).
        self.mode = QComboBox()
        self.mode.setObjectName("searchMode")
        for label, space, tip in SEARCH_MODES:
            self.mode.addItem(label, space)
            self.mode.setItemData(self.mode.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.mode.setToolTip("Search by: words, the captions' meaning, or the picture itself")
        self.mode.currentIndexChanged.connect(self._emit_now)
        #: Shown while the grid holds the photos that look like one ("Find similar").
        self.similar_note = QWidget()
        self.similar_note.setObjectName("similarNote")
        self.similar_label = QLabel()
        self.similar_back = QToolButton()
        self.similar_back.setText("Show all photos")
        similar_row = QHBoxLayout(self.similar_note)
        similar_row.setContentsMargins(0, 0, 0, 0)
        similar_row.addWidget(self.similar_label, 1)
        similar_row.addWidget(self.similar_back)
        self.similar_note.hide()

        self.state = QComboBox()
        for label, states in STATE_CHOICES:
            self.state.addItem(label, states)
            if states in _STATE_TIPS:
                self.state.setItemData(self.state.count() - 1, _STATE_TIPS[states], Qt.ItemDataRole.ToolTipRole)
        self.model = QComboBox()
        self.model.setMinimumContentsLength(6)
        self.model.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model.addItem("Any model", None)
        #: Whose state, text, model and confidence the filters look at (a caption kind).
        self.kind_choice = QComboBox()
        self.kind_choice.setObjectName("kindFilter")
        self.kind_choice.setToolTip("The caption kind the search, state, model and confidence filters look at")
        # Narrow (its list is as wide as it needs): the window must still fit a 1024-pixel screen.
        self.kind_choice.setMinimumContentsLength(6)
        self.kind_choice.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.set_kinds(list(BUILTIN_KINDS.values()))
        self.min_score = PercentBox(0, "Lowest model confidence to show")
        self.max_score = PercentBox(100, "Highest model confidence to show")
        self.sort = QComboBox()
        for label, key in SORT_CHOICES:
            self.sort.addItem(label, key)
        self.sort.setToolTip("Sort by")
        # An arrow rather than a labelled box: it leaves the search field room at 1024 pixels.
        self.descending = QToolButton()
        self.descending.setObjectName("sortDescending")
        self.descending.setCheckable(True)
        self.descending.setAccessibleName("Descending")
        self.descending.toggled.connect(self._show_direction)
        self._show_direction(False)
        self.review = QToolButton()
        self.review.setText(REVIEW_OFF)
        self.review.setCheckable(True)
        self.review.setToolTip("Model captions, least confident first (Ctrl+R)")
        self.review.toggled.connect(self._on_review)
        # The button itself says "3 of 20 reviewed" while the queue is on, at a width fixed for
        # the longest count: nothing appears beside it, so the search box never shrinks under the pointer.
        self.review.setObjectName("reviewProgress")
        self.review.setFixedWidth(max(self.review.sizeHint().width(),
                                      self.review.fontMetrics().horizontalAdvance("00000 of 00000 reviewed") + 16))
        self._progress_model: QAbstractItemModel | None = None
        self._progress_timer = QTimer(self)
        self._progress_timer.setSingleShot(True)
        self._progress_timer.setInterval(150)
        self._progress_timer.timeout.connect(self.update_review_progress)
        #: Set when the review queue was just turned on: the window then starts at the
        #: first (least confident) row instead of keeping the current image.
        self.restart_at_top = False

        for widget in (self.kind_choice, self.state, self.model, self.sort):
            widget.currentIndexChanged.connect(self._emit_now)
        for box in (self.min_score, self.max_score):
            box.valueChanged.connect(lambda _v: self._debounce.start())
        self.descending.toggled.connect(self._emit_now)

        # Two rows keep the bar narrow enough for a laptop screen beside the panels.
        top = QHBoxLayout()
        top.addWidget(self.search, 1)
        top.addWidget(self.mode)
        top.addWidget(self.sort)
        top.addWidget(self.descending)
        top.addWidget(self.review)
        bottom = QHBoxLayout()
        bottom.addWidget(self.kind_choice)
        bottom.addWidget(self.state)
        bottom.addWidget(self.model, 1)
        confidence = QLabel("Conf.")
        confidence.setToolTip("Model confidence: from … to …")
        bottom.addWidget(confidence)
        bottom.addWidget(self.min_score)
        bottom.addWidget(QLabel("to"))
        bottom.addWidget(self.max_score)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 2)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addLayout(bottom)
        # "No matches" state: says what was searched and offers the way back.
        self.no_matches = QWidget()
        self.no_matches.setObjectName("noMatches")
        self.no_matches_label = QLabel()
        self.no_matches_label.setWordWrap(True)
        self.no_matches_label.setStyleSheet("color: palette(placeholder-text); padding: 6px;")
        clear = QToolButton()
        clear.setText("Show all photos")
        clear.setToolTip("Clears the search (or, without one, the filters); the review queue and sort stay")
        clear.clicked.connect(self.clear_search)
        no_matches_row = QHBoxLayout(self.no_matches)
        no_matches_row.setContentsMargins(0, 0, 0, 0)
        no_matches_row.addWidget(self.no_matches_label, 1)
        no_matches_row.addWidget(clear)
        self.no_matches.hide()
        layout.addWidget(self.no_matches)
        layout.addWidget(self.similar_note)
        self._silent = False

    def _show_direction(self, descending: bool) -> None:
        self.descending.setArrowType(Qt.ArrowType.DownArrow if descending else Qt.ArrowType.UpArrow)
        self.descending.setToolTip("Descending order (click for ascending)" if descending
                                   else "Ascending order (click for descending)")

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

    def set_kinds(self, kinds: list[CaptionKind]) -> None:
        """Offer the library's caption kinds (keeps the current choice)."""
        chosen = self.kind_choice.currentData() or CAPTION
        names = [k.name for k in sorted(kinds, key=lambda k: k.name != CAPTION)]
        if names == [self.kind_choice.itemData(i) for i in range(self.kind_choice.count())]:
            return
        self._silent = True
        try:
            self.kind_choice.clear()
            for kind in sorted(kinds, key=lambda k: k.name != CAPTION):
                self.kind_choice.addItem(kind.label, kind.name)
            self.kind_choice.setCurrentIndex(max(0, self.kind_choice.findData(chosen)))
        finally:
            self._silent = False

    def filter(self) -> ImageFilter:
        """The filter the widgets describe (the window adds the sidebar's folder)."""
        return ImageFilter(
            text=self.search.text(),
            states=self.state.currentData() or frozenset(),
            model=self.model.currentData(),
            min_score=self.min_score.score_bound(),
            max_score=self.max_score.score_bound(),
            sort=self.sort.currentData(),
            descending=self.descending.isChecked(),
            kind=self.kind_choice.currentData() or CAPTION,
        )

    def meaning(self) -> str | None:
        """``"text"`` or ``"image"`` when the search box searches by meaning, else None (words)."""
        return self.mode.currentData()

    def set_meaning(self, space: str | None) -> None:
        self.mode.setCurrentIndex(max(0, self.mode.findData(space)))

    def set_review_queue(self, on: bool) -> None:
        self.review.setChecked(on)

    def _on_review(self, on: bool) -> None:
        """Review queue: model captions, least confident first; off returns to all by name."""
        self.restart_at_top = on
        if on:
            self._progress_timer.start()
        else:
            self.review.setText(REVIEW_OFF)
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

    # -- review progress ---------------------------------------------------------------------

    def watch_review_progress(self, model: QAbstractItemModel) -> None:
        """Keep "n of N reviewed" up to date from the grid *model* (``review_progress()``)."""
        self._progress_model = model
        for signal in (model.dataChanged, model.modelReset, model.rowsInserted):
            signal.connect(lambda *_args: self._progress_timer.start() if self.review.isChecked() else None)

    def update_review_progress(self) -> None:
        model = self._progress_model
        if model is None or not self.review.isChecked():
            self.review.setText(REVIEW_OFF)
            return
        done, total = model.review_progress()  # type: ignore[attr-defined]
        self.review.setText(f"{done} of {total} reviewed")

    def review_progress_text(self) -> str:
        """"n of N reviewed" while the review queue is on, else ""."""
        return self.review.text() if self.review.isChecked() and self.review.text() != REVIEW_OFF else ""

    def take_restart_at_top(self) -> bool:
        """True once after the review queue was turned on (see ``restart_at_top``)."""
        restart, self.restart_at_top = self.restart_at_top, False
        return restart

    # -- the "no matches" state ------------------------------------------------------------------

    def show_result_count(self, count: int) -> None:
        """After the grid loaded: show "No matches" (and why) when the filter found nothing."""
        flt = self.filter()
        narrowed = bool(flt.text.strip() or flt.states or flt.model or flt.min_score is not None
                        or flt.max_score is not None)
        if count or not narrowed:
            self.no_matches.hide()
            return
        if flt.text.strip() and self.meaning():
            what = f"Nothing indexed yet means “{flt.text.strip()}”"
        elif flt.text.strip():
            what = f"No matches for “{flt.text.strip()}” in captions, file or folder names"
        else:
            what = "No photos match these filters"
        self.no_matches_label.setText(what + " here.")
        self.no_matches.show()

    def clear_search(self) -> None:
        """The no-match banner's way back: drop the search only (review queue, sort and the
        rest stay); without a search, the state, model and confidence filters go instead."""
        if not self.search.text().strip():
            self._reset(review=False, search=False, state=not self.review.isChecked())
            return
        self.search.clear()
        self._emit_now()

    def clear_filters(self) -> None:
        """Back to every photo of the location, by name (search, state, model, bounds off)."""
        self._reset(review=True, search=True, state=True)

    def _reset(self, *, review: bool, search: bool, state: bool) -> None:
        """Drop the model and confidence filters and the named others, then filter once."""
        self._silent = True
        try:
            if review:
                self.review.setChecked(False)
            if search:
                self.search.clear()
            if state:
                self.state.setCurrentIndex(0)
            self.model.setCurrentIndex(0)
            self.min_score.setValue(self.min_score.any_value)
            self.max_score.setValue(self.max_score.any_value)
        finally:
            self._silent = False
        self._emit_now()
