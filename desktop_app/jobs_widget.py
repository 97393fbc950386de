"""A compact progress display for one background job, shown in the status bar.

:class:`JobClock` measures a job's speed over the time it actually worked (paused time
and the model load excluded); :class:`JobStatusWidget` shows label, bar, Pause and
Cancel, and keeps saying "Cancelling…" from the click until the job has stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QProgressBar, QToolButton, QWidget

from core.jobs import count_phrase
from desktop_app.dialog_kit import ElidedLabel


def plural(count: int, word: str, many: str | None = None) -> str:
    """``plural(1, "error")`` → "1 error"; ``plural(2, "error")`` → "2 errors" (core's rule)."""
    return count_phrase(count, word, many or word + "s")


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def format_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"  # pragma: no cover


class JobClock:
    """Images per second and time left, counting only the time the job was working.

    The clock starts at the job's first progress report (after the model has loaded),
    stops while paused, and measures from the count it started at, so neither a model
    load nor a coffee break makes the job look slower than it is.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        self._start: float | None = None
        self._start_done = 0
        self._paused_at: float | None = None
        self._paused_total = 0.0

    def pause(self) -> None:
        if self._paused_at is None:
            self._paused_at = self._clock()

    def resume(self) -> None:
        if self._paused_at is not None:
            self._paused_total += self._clock() - self._paused_at
            self._paused_at = None

    def working_seconds(self) -> float:
        if self._start is None:
            return 0.0
        now = self._paused_at if self._paused_at is not None else self._clock()
        return max(0.0, now - self._start - self._paused_total)

    def update(self, done: int, total: int | None) -> tuple[float | None, float | None]:
        """Record a progress report; returns (images per second, seconds left), None if unknown."""
        if self._start is None:
            self._start = self._paused_at if self._paused_at is not None else self._clock()
            self._start_done = done
            self._paused_total = 0.0
            return None, None
        seconds = self.working_seconds()
        finished = done - self._start_done
        if seconds <= 0 or finished <= 0:
            return None, None
        rate = finished / seconds
        eta = max(0.0, (total - done) / rate) if total else None
        return rate, eta


class JobStatusWidget(QWidget):
    pause_toggled = Signal(bool)
    cancel_clicked = Signal()
    #: "Show" was clicked: bring back the window the job belongs to (``showable`` only).
    show_clicked = Signal()

    def __init__(self, name: str, *, pausable: bool, showable: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName(name)
        # Fixed widths: the bar and buttons stay put when the text or Pause/Resume changes.
        self.label = ElidedLabel()
        self.label.setFixedWidth(self.label.fontMetrics().horizontalAdvance("0" * 38))
        self.bar = QProgressBar()
        self.bar.setFixedWidth(180)
        self.bar.setTextVisible(True)
        self.pause_button = QToolButton()
        self.pause_button.setText("Pause")
        self.pause_button.setCheckable(True)
        self.pause_button.toggled.connect(self._on_pause)
        self.pause_button.setVisible(pausable)
        self.pause_button.setFixedWidth(max(self.pause_button.fontMetrics().horizontalAdvance(word)
                                            for word in ("Pause", "Resume")) + 16)
        self.cancel_button = QToolButton()
        self.cancel_button.setText("Cancel")
        self.cancel_button.clicked.connect(self.cancel_clicked)
        self.show_button = QToolButton()
        self.show_button.setText("Show")
        self.show_button.clicked.connect(self.show_clicked)
        self.show_button.setVisible(showable)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 0, 4, 0)
        layout.addWidget(self.label)
        layout.addWidget(self.bar)
        layout.addWidget(self.pause_button)
        layout.addWidget(self.show_button)
        layout.addWidget(self.cancel_button)
        #: Set from the Cancel click until :meth:`end`: progress no longer replaces it.
        self.cancelling_text: str | None = None
        self.hide()

    def _on_pause(self, paused: bool) -> None:
        self.pause_button.setText("Resume" if paused else "Pause")
        self.pause_toggled.emit(paused)

    @property
    def paused(self) -> bool:
        return self.pause_button.isChecked()

    def begin(self, text: str) -> None:
        self.cancelling_text = None
        self.label.setText(text)
        self.bar.setRange(0, 0)  # busy until the first numbers arrive
        self.pause_button.blockSignals(True)
        self.pause_button.setChecked(False)
        self.pause_button.setText("Pause")
        self.pause_button.blockSignals(False)
        self.pause_button.setEnabled(True)
        self.cancel_button.setEnabled(True)
        self.show()

    def set_stage(self, text: str) -> None:
        """A step before numbers exist (loading the model, the first batch)."""
        if self.cancelling_text is None:
            self.label.setText(text)
        self.bar.setRange(0, 0)

    def mark_cancelling(self, text: str = "Cancelling…") -> None:
        """Say *text* until the job stops (:meth:`end`), whatever progress arrives meanwhile."""
        self.cancelling_text = text
        self.cancel_button.setEnabled(False)
        self.pause_button.setEnabled(False)
        self.label.setText(text)

    def update_progress(self, text: str, done: int, total: int | None) -> None:
        if self.cancelling_text is not None:
            self.label.setText(self.cancelling_text)
        else:
            self.label.setText(text)
        if total:
            self.bar.setRange(0, total)
            self.bar.setValue(min(done, total))
        else:
            self.bar.setRange(0, 0)

    def end(self) -> None:
        self.cancelling_text = None
        self.hide()
