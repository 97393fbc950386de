"""The Train dialog: retrain the captioner from verified captions, with a live chart.

Opened from Caption → "Train on verified captions…" (``MainWindow.open_train_dialog``);
a version it creates refreshes the model picker.

Training runs :func:`core.training.train` on a ``QThread``; progress, per-epoch metrics
and the result come back as queued signals, and Cancel sets the job's cancel token (the
run stops after the current batch and can be resumed by starting it again with the same
name and settings).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QPointF, Qt, QThread, Signal, Slot
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.captioning import DEFAULT_MODEL
from desktop_app.background import JOB_NICENESS, lower_thread_priority

if TYPE_CHECKING:
    from core.library import Library

__all__ = ["MetricChart", "TrainDialog"]

METRICS = (("exact_match", "Exact match"), ("cider", "CIDEr"), ("bleu4", "BLEU-4"), ("rouge_l", "ROUGE-L"),
           ("edit_rate", "Edit rate"))


class MetricChart(QWidget):
    """Loss (red) and CIDEr/10 (blue) per epoch, drawn with QPainter (no QtCharts needed)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.records: list[dict[str, Any]] = []
        self.setMinimumSize(320, 160)

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self.update()

    def series(self) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        loss = [(r["epoch"], float(r["loss"])) for r in self.records if r.get("loss") is not None]
        cider = [(r["epoch"], float(r.get("cider", 0.0)) / 10.0) for r in self.records]
        return loss, cider

    def paintEvent(self, _event: Any) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("white"))
        loss, cider = self.series()
        if not cider:
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Loss and CIDEr appear here after each epoch")
            return
        w, h, m = self.width(), self.height(), 20
        max_epoch = max(1, max(e for e, _ in cider))
        top = max([1.0] + [v for _, v in loss])
        for points, colour in ((loss, "#d03030"), (cider, "#3050d0")):
            painter.setPen(QPen(QColor(colour), 2))
            scaled = [QPointF(m + (w - 2 * m) * e / max_epoch, h - m - (h - 2 * m) * min(v, top) / top)
                      for e, v in points]
            for a, b in itertools.pairwise(scaled):
                painter.drawLine(a, b)
        painter.setPen(QColor("black"))
        painter.drawText(m, m - 5, "loss (red), CIDEr / 10 (blue)")


class _TrainWorker(QObject):
    progress = Signal(object)
    epoch = Signal(object)
    finished = Signal(object)
    failed = Signal(str)

    def __init__(self, run: Callable[..., Any], library: Library, base: str, name: str, config: Any) -> None:
        super().__init__()
        self._run, self._args = run, (library, base, name, config)
        self.cancel = threading.Event()

    @Slot()
    def work(self) -> None:
        lower_thread_priority(JOB_NICENESS)
        try:
            result = self._run(*self._args, progress=self.progress.emit, cancel=self.cancel,
                               on_epoch=self.epoch.emit)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.failed.emit(str(exc))
            return
        self.finished.emit(result)


class TrainDialog(QDialog):
    """Method, hyperparameters, data summary, live chart, cancel, before/after table."""

    version_created = Signal(str)

    def __init__(self, library: Library, *, base_model: str = DEFAULT_MODEL,
                 train_fn: Callable[..., Any] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Train captioner")
        self.library = library
        self._train_fn = train_fn
        self._thread: QThread | None = None
        self._worker: _TrainWorker | None = None
        self.result: Any = None

        self.base = QLineEdit(base_model)
        self.name = QLineEdit("my-captioner")
        self.method = QComboBox()
        self.method.addItems(["lora", "full", "qlora"])
        self.lora_r = self._spin(1, 256, 8)
        self.lora_alpha = self._spin(1, 1024, 32)
        self.lora_dropout = self._dspin(0.0, 0.9, 0.1, 2)
        self.lr = self._dspin(1e-6, 0.1, 1e-4, 6)
        self.epochs = self._spin(1, 100, 5)
        self.batch_size = self._spin(1, 256, 8)
        self.val_ratio = self._dspin(0.01, 0.9, 0.1, 2)
        self.include_imports = QCheckBox("Also use imported (unverified) captions")
        self.family_defaults = QCheckBox("Measured LoRA defaults for the model family (rank, alpha, dropout, rate)")
        self.family_defaults.setChecked(True)
        self.family_defaults.toggled.connect(lambda _on: self._update_enabled())
        self.data_summary = QLabel()
        form = QFormLayout()
        for label, widget in (("Base model", self.base), ("Version name", self.name), ("Method", self.method),
                              ("", self.family_defaults), ("LoRA rank", self.lora_r), ("LoRA alpha", self.lora_alpha),
                              ("LoRA dropout", self.lora_dropout), ("Learning rate", self.lr),
                              ("Epochs", self.epochs), ("Batch size", self.batch_size),
                              ("Validation share", self.val_ratio), ("", self.include_imports),
                              ("Data", self.data_summary)):
            form.addRow(label, widget)
        self.method.currentTextChanged.connect(self._method_changed)
        self._update_enabled()
        self.val_ratio.valueChanged.connect(self.refresh_data_summary)
        self.include_imports.toggled.connect(self.refresh_data_summary)

        self.chart = MetricChart()
        self.status = QLabel("Ready")
        self.bar = QProgressBar()
        self.table = QTableWidget(len(METRICS), 2)
        self.table.setHorizontalHeaderLabels(["Base", "Trained"])
        self.table.setVerticalHeaderLabels([label for _, label in METRICS])
        self.start_button = QPushButton("Train")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.chart, 1)
        layout.addWidget(self.bar)
        layout.addWidget(self.status)
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        self.refresh_data_summary()

    @staticmethod
    def _spin(low: int, high: int, value: int) -> QSpinBox:
        box = QSpinBox()
        box.setRange(low, high)
        box.setValue(value)
        return box

    @staticmethod
    def _dspin(low: float, high: float, value: float, decimals: int) -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setDecimals(decimals)
        box.setRange(low, high)
        box.setSingleStep(10 ** -decimals if decimals > 2 else 0.05)
        box.setValue(value)
        return box

    def _method_changed(self, method: str) -> None:
        self._update_enabled()
        self.lr.setValue(2e-5 if method == "full" else 1e-4)

    def _update_enabled(self) -> None:
        method = self.method.currentText()
        lora_by_hand = method != "full" and not self.family_defaults.isChecked()
        for box in (self.lora_r, self.lora_alpha, self.lora_dropout):
            box.setEnabled(lora_by_hand)
        self.family_defaults.setEnabled(method != "full")
        self.lr.setEnabled(method == "full" or lora_by_hand)

    def config(self) -> Any:
        from core.training import TrainingConfig

        method = self.method.currentText()
        if method != "full" and self.family_defaults.isChecked():  # None: the family's measured defaults
            return TrainingConfig(method=method, epochs=self.epochs.value(), batch_size=self.batch_size.value(),
                                  val_ratio=self.val_ratio.value(), include_imports=self.include_imports.isChecked())
        return TrainingConfig(method=method, lora_r=self.lora_r.value(),
                              lora_alpha=self.lora_alpha.value(), lora_dropout=self.lora_dropout.value(),
                              lr=self.lr.value(), epochs=self.epochs.value(), batch_size=self.batch_size.value(),
                              val_ratio=self.val_ratio.value(), include_imports=self.include_imports.isChecked())

    @Slot()
    def refresh_data_summary(self) -> None:
        from core.training import collect_training_data

        try:
            data = collect_training_data(self.library, val_ratio=self.val_ratio.value(),
                                         include_imports=self.include_imports.isChecked())
        except Exception as exc:  # noqa: BLE001 - shown inline
            self.data_summary.setText(str(exc))
            return
        self.data_summary.setText(data.summary())

    @Slot()
    def start(self) -> None:
        try:
            config = self.config()
        except ValueError as exc:
            self.status.setText(str(exc))
            return
        if self._train_fn is None:
            from core.training import train as train_fn
        else:
            train_fn = self._train_fn
        self.chart.records.clear()
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText("Starting…")
        self._thread = QThread(self)
        self._worker = _TrainWorker(train_fn, self.library, self.base.text().strip(), self.name.text().strip(),
                                    config)
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.work)
        self._worker.progress.connect(self._on_progress)
        self._worker.epoch.connect(self.chart.add)
        self._worker.finished.connect(self._on_finished)
        self._worker.failed.connect(self._on_failed)
        self._thread.start()

    @Slot()
    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.cancel.set()
            self.status.setText("Stopping after the current batch…")

    @Slot(object)
    def _on_progress(self, progress: Any) -> None:
        if progress.total:
            self.bar.setMaximum(int(progress.total))
            self.bar.setValue(int(progress.done))
        self.status.setText(progress.message)

    def _done(self) -> None:
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self._thread is not None:
            self._thread.quit()
            self._thread.wait()
            self._thread = None

    @Slot(object)
    def _on_finished(self, result: Any) -> None:
        self.result = result
        self._done()
        if result.cancelled:
            self.status.setText("Cancelled. Start again with the same name and settings to resume.")
            return
        for row, (key, _) in enumerate(METRICS):
            for col, metrics in enumerate((result.base_metrics, result.metrics)):
                value = metrics.get(key)
                self.table.setItem(row, col, QTableWidgetItem("-" if value is None else f"{value:.3f}"))
        self.status.setText(f"Saved version '{result.name}' (best epoch {result.best_epoch})")
        self.version_created.emit(result.name)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self._done()
        self.status.setText(message)

    def closeEvent(self, event: Any) -> None:
        self.cancel()
        if self._thread is not None:
            self._thread.quit()
            self._thread.wait(5000)
        super().closeEvent(event)
