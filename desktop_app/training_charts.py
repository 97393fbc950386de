"""The Train dialog's charts, drawn with QPainter: the loss and CIDEr per epoch
(:class:`MetricChart`) and the learning-rate range test's curve with its choice (:class:`LrCurve`)."""

from __future__ import annotations

import itertools
import math
from typing import Any

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

__all__ = ["LrCurve", "MetricChart"]


class MetricChart(QWidget):
    """Loss (red, left scale) and CIDEr (blue, right scale) per epoch, drawn with QPainter.

    Each series has its own scale from 0 to its largest value, labelled on its side, so a
    CIDEr that rises from 0.3 to 0.9 is as visible as a loss that falls from 2 to 0.4.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.records: list[dict[str, Any]] = []
        self.setMinimumSize(320, 160)

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self.update()

    def series(self) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """(epoch, loss) and (epoch, CIDEr) points; epoch 0 (the base model) has no loss."""
        loss = [(r["epoch"], float(r["loss"])) for r in self.records if r.get("loss") is not None]
        cider = [(r["epoch"], float(r["cider"])) for r in self.records if r.get("cider") is not None]
        return loss, cider

    @staticmethod
    def scale_top(points: list[tuple[int, float]]) -> float:
        """The top of a series' scale: its largest value (a small floor keeps flat zeros drawable)."""
        return max([1e-3] + [v for _, v in points])

    def paintEvent(self, _event: Any) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("white"))
        loss, cider = self.series()
        if not loss and not cider:
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Loss and CIDEr appear here after each epoch")
            return
        metrics = painter.fontMetrics()
        w, h = self.width(), self.height()
        left, right = 8 + metrics.horizontalAdvance("0.000"), 8 + metrics.horizontalAdvance("0.000")
        top_m, bottom_m = metrics.height() + 8, metrics.height() + 6
        max_epoch = max([1] + [e for e, _ in loss + cider])
        plot_w, plot_h = w - left - right, h - top_m - bottom_m
        painter.setPen(QColor("#bbbbbb"))
        painter.drawLine(left, h - bottom_m, w - right, h - bottom_m)
        for (points, colour, x_label, align) in ((loss, "#d03030", 4, Qt.AlignmentFlag.AlignLeft),
                                                  (cider, "#3050d0", w - right + 4, Qt.AlignmentFlag.AlignLeft)):
            if not points:
                continue
            top = self.scale_top(points)
            painter.setPen(QPen(QColor(colour), 2))
            scaled = [QPointF(left + plot_w * e / max_epoch, h - bottom_m - plot_h * v / top) for e, v in points]
            for a, b in itertools.pairwise(scaled):
                painter.drawLine(a, b)
            for point in scaled:
                painter.drawEllipse(point, 2.5, 2.5)
            painter.setPen(QColor(colour))
            painter.drawText(QRectF(x_label, top_m - metrics.height() / 2, right - 6, metrics.height()),
                             int(align), f"{top:.3g}")
            painter.drawText(QRectF(x_label, h - bottom_m - metrics.height() / 2, right - 6, metrics.height()),
                             int(align), "0")
        painter.setPen(QColor("black"))
        painter.drawText(left, metrics.ascent() + 3, "loss (red, left scale) · CIDEr (blue, right scale)")
        painter.drawText(QRectF(left, h - bottom_m + 2, plot_w, metrics.height()),
                         int(Qt.AlignmentFlag.AlignHCenter), f"epochs 0–{max_epoch}")
        painter.end()


class LrSparkline(QWidget):
    """The range test's smoothed loss against the rate (log scale), the chosen rate marked in green."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.curve: list[list[float]] = []
        self.chosen: float | None = None
        self.setFixedHeight(48)

    def set_curve(self, curve: list[list[float]], chosen: float | None) -> None:
        self.curve, self.chosen = [p for p in curve if p[0] > 0 and math.isfinite(p[1])], chosen
        self.update()

    def points(self) -> list[QPointF]:
        """The curve in widget coordinates (x: log rate, y: loss from its lowest to its highest)."""
        if len(self.curve) < 2:
            return []
        xs = [math.log10(lr) for lr, _ in self.curve]
        ys = [loss for _, loss in self.curve]
        x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
        w, h = self.width() - 8, self.height() - 8
        return [QPointF(4 + w * (x - x0) / max(1e-9, x1 - x0), 4 + h * (1 - (y - y0) / max(1e-9, y1 - y0)))
                for x, y in zip(xs, ys)]

    def paintEvent(self, _event: Any) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("white"))
        points = self.points()
        painter.setPen(QPen(QColor("#d03030"), 1.5))
        for a, b in itertools.pairwise(points):
            painter.drawLine(a, b)
        if points and self.chosen:
            xs = [math.log10(lr) for lr, _ in self.curve]
            x = 4 + (self.width() - 8) * (math.log10(self.chosen) - min(xs)) / max(1e-9, max(xs) - min(xs))
            painter.setPen(QPen(QColor("#107c10"), 2))
            painter.drawLine(QPointF(x, 2), QPointF(x, self.height() - 2))
        painter.end()


class LrCurve(QWidget):
    """What the range test chose: "Learning rate: ..." with its note, and the sparkline of its curve."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.sparkline = LrSparkline()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label)
        layout.addWidget(self.sparkline)
        self.hide()

    def show_result(self, lr_range: dict[str, Any] | None) -> None:
        """Show a run's ``lr_range`` (``TrainingResult.lr_range``); None (a rate given by hand) hides it."""
        if not lr_range:
            self.hide()
            return
        from core.training.lr_range import LrRangeResult

        test = LrRangeResult.from_dict(lr_range)
        self.label.setText(f"Learning rate: {test.lr:.1e} ({test.note().replace(', or pass --lr', '')})")
        self.label.setStyleSheet("" if test.inside is not False else "color: #a4262c;")
        self.sparkline.set_curve(test.curve, test.lr)
        self.sparkline.setToolTip("Range test: smoothed loss (red) as the rate rose from "
                                  f"{test.curve[0][0]:.0e} to {test.curve[-1][0]:.0e} (log scale); "
                                  "green: the chosen rate" if test.curve else "")
        self.show()
