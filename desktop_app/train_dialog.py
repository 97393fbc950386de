"""The Train dialog: retrain the captioner from verified captions, with a live chart.

Opened from Caption → Train (:mod:`desktop_app.controllers.versions`); by hand::

    from desktop_app.train_dialog import TrainDialog
    # base_model: the library's current model's base unless given (core.training.current)
    dialog = TrainDialog(self.library, service=self.captioning, parent=self)
    dialog.version_created.connect(lambda name: ...)  # e.g. refresh the model picker
    dialog.use_requested.connect(lambda name: ...)    # "Make active and re-caption"
    dialog.show()

Training runs :func:`core.training.train` on the window's model thread
(:class:`desktop_app.model_thread.CaptionService`), the one that captions: one job at a time,
so a caption model and a training run never hold memory together.  While captioning
runs, Train is off and the dialog says why.  Progress, per-epoch metrics and the result
come back as queued signals, and Cancel sets the run's cancel token (the run stops after
the current batch and can be resumed by starting it again with the same name and
settings).  Without a *service* (a dialog on its own) the dialog starts a model thread
of its own for each run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QSize, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.training.config import MIN_TRAIN, MIN_VALIDATION
from desktop_app.dialog_kit import fit_on_screen, lines_high, remember_folder, start_folder
from desktop_app.model_thread import CaptionService, ModelJob
from desktop_app.restyle_choice import RESTYLER_BASE_HINT, restyler_checkbox, restyler_train_fn
from desktop_app.training_charts import LrCurve, MetricChart

if TYPE_CHECKING:
    from core.library import Library

__all__ = ["MetricChart", "TrainDialog"]

METRICS = (("exact_match", "Exact match"), ("cider", "CIDEr"), ("bleu4", "BLEU-4"), ("rouge_l", "ROUGE-L"),
           ("edit_rate", "Edit rate"), ("bertscore_f1", "BERTScore F1"), ("clipscore", "CLIPScore"))
#: Model-based metrics: computed on the held-out split (test when there is one), only when asked.
SEMANTIC = ("bertscore_f1", "clipscore")


#: Metrics where a smaller number is better (the others: bigger is better).
LOWER_IS_BETTER = frozenset({"edit_rate"})
#: The metric that decides whether a new version beat its base.
DECIDING_METRIC = "cider"


def not_ready_reason(train_count: int, validation_count: int, values: str = "captions") -> str | None:
    """Why training cannot start with these many *values* (a kind's, in words), in plain words (None: it can)."""
    if train_count < MIN_TRAIN:
        photos = "captioned photos" if values == "captions" else f"photos with {values}"
        return (f"Training needs at least {MIN_TRAIN} {photos} to learn from; there are "
                f"{train_count}. Write or accept more {values} first.")
    if validation_count < MIN_VALIDATION:
        return (f"Training keeps at least {MIN_VALIDATION} photos aside to check the new version; "
                f"there are {validation_count}. Raise the validation share or add {values}.")
    return None


def plain_error(message: str) -> str:
    """A training error in the dialog's words (core's messages name the CLI flag)."""
    return (message.replace("--val-ratio", "the validation share")
            .replace("import checked ones with `import ... --verified`",
                     "import checked ones (File → Import captions, \"checked by a person\")"))


def verdict(base: dict[str, float], trained: dict[str, float]) -> tuple[bool, str]:
    """Point estimates only, for a result without the interval comparison: (beat, sentence)."""
    before, after = base.get(DECIDING_METRIC), trained.get(DECIDING_METRIC)
    if before is None or after is None:
        return False, "There were no held-out photos to compare the new version with the base model."
    if after > before + 1e-9:
        return True, (f"The new version beat the base model on the held-out photos "
                      f"(CIDEr {after:.3f} vs {before:.3f}).")
    if abs(after - before) <= 1e-9:
        return False, (f"The new version did no better than the base model on the held-out photos "
                       f"(CIDEr {after:.3f} both): nothing improved. Keep using the current model, "
                       "or add more captions and train again.")
    return False, (f"The new version did worse than the base model on the held-out photos "
                   f"(CIDEr {after:.3f} vs {before:.3f}). Keep using the current model.")


def result_verdict(result: Any) -> tuple[bool, str]:
    """(beat, the sentences under the table): the interval rule of core, the test split's numbers and the notes."""
    if not getattr(result, "comparison", None):
        return verdict(result.base_metrics, result.metrics)
    text = result.verdict()
    lines = [text[0].upper() + text[1:] + "."]
    if getattr(result, "test_size", 0):
        base, trained = result.base_test_metrics, result.test_metrics
        lines.append(f"On {result.test_size} test photos that neither training nor the choice of epoch saw: "
                     f"exact match {base.get('exact_match', 0):.3f} → {trained.get('exact_match', 0):.3f}, "
                     f"CIDEr {base.get('cider', 0):.3f} → {trained.get('cider', 0):.3f}.")
    lines.extend(note[0].upper() + note[1:] + "." for note in result.notes)
    lines.append("In brackets: 95 % intervals over the validation photos.")
    return bool(result.beats_base), "\n".join(lines)


def kind_choice(library: Library) -> QComboBox:
    """The kinds a version can learn, the caption first, each saying how many verified values it has."""
    from core.kinds import CAPTION, all_kinds
    from core.queries import ImageFilter, count_filtered

    choice = QComboBox()
    choice.setObjectName("trainKind")
    choice.setToolTip("The caption kind the version learns from its verified values, and writes when it captions")
    with library.db.read() as session:
        kinds = sorted(all_kinds(session).values(), key=lambda k: k.name != CAPTION)
        for kind in kinds:
            count = count_filtered(session, ImageFilter(states=frozenset({"verified"}), kind=kind.name))
            choice.addItem(f"{kind.label} ({count} verified)", kind.name)
    return choice


class TrainDialog(QDialog):
    """Method, hyperparameters, data summary, live chart, cancel, before/after table."""

    version_created = Signal(str)
    #: "Make active and re-caption" was clicked for this version name.
    use_requested = Signal(str)

    def __init__(self, library: Library, *, base_model: str | None = None,
                 train_fn: Callable[..., Any] | None = None, service: CaptionService | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Train captioner")
        self.library = library
        self._train_fn = train_fn
        #: The model thread training runs on (shared with captioning in the window).
        self._service = service
        self._own_service: CaptionService | None = None
        self._run: ModelJob | None = None
        #: The last run ended while the dialog was hidden; nobody has seen how yet.
        self.unseen_result = False
        self._data_reason: str | None = None
        self.result: Any = None
        if service is not None:
            service.state_changed.connect(self._refresh_start)

        from core.training.current import current_model

        # The library's current model: an active version pre-fills its base (a LoRA
        # version is no base to train on), and offers to continue from it where it can.
        self.current = current_model(library)
        self.base = QLineEdit(base_model or self.current.base_model)
        version = self.current.version
        self.continue_from = QCheckBox(f"Continue from the active version “{version}”" if version else "")
        self.continue_from.setEnabled(self.current.can_continue)
        self.continue_from.setToolTip(
            "Train on top of the active version (a full fine-tune) instead of its base model"
            if self.current.can_continue else
            "A LoRA version cannot be trained further: training starts from its base model "
            "(Export merged writes a full model folder you can train from).")
        self.continue_from.toggled.connect(self._continue_toggled)
        self.browse_base = QPushButton("Browse…")
        self.browse_base.setToolTip("Choose a model folder on disk")
        self.browse_base.clicked.connect(self.choose_base_folder)
        base_row = QHBoxLayout()
        base_row.setContentsMargins(0, 0, 0, 0)
        base_row.addWidget(self.base, 1)
        base_row.addWidget(self.browse_base)
        self.name = QLineEdit("my-captioner")
        self.kind = kind_choice(library)
        self.method = QComboBox()
        self.method.addItems(["lora", "full", "qlora"])
        self.lora_r = self._spin(1, 256, 8)
        self.lora_alpha = self._spin(1, 1024, 32)
        self.lora_dropout = self._dspin(0.0, 0.9, 0.1, 2)
        self.lr = self._dspin(1e-6, 0.1, 1e-4, 6)
        self.auto_lr = QCheckBox("Find the learning rate on my photos (a short range test)")
        self.auto_lr.setChecked(True)
        self.auto_lr.toggled.connect(lambda _on: self._update_enabled())
        self.epochs = self._spin(1, 100, 5)
        self.batch_size = self._spin(1, 256, 8)
        self.val_ratio = self._dspin(0.01, 0.9, 0.1, 2)
        self.include_imports = QCheckBox("Also use imported (unverified) captions")
        self.semantic = QCheckBox("Also score BERTScore and CLIPScore (their models download on first use)")
        self.family_defaults = QCheckBox("Use the recommended LoRA settings for this model's family")
        self.family_defaults.setChecked(True)
        self.family_defaults.toggled.connect(lambda _on: self._update_enabled())
        self.base.editingFinished.connect(self._update_enabled)
        self.restyler = restyler_checkbox(library)
        # A restyler learns to rewrite captions: it has no kind to choose.
        self.restyler.toggled.connect(lambda on: (self.kind.setCurrentIndex(0) if on else None,
                                                  self.kind.setEnabled(not on)))
        self.restyler.toggled.connect(lambda on: (self.base.setText("" if on else self.current.base_model),
                                                  self.base.setPlaceholderText(RESTYLER_BASE_HINT if on else "")))
        self.data_summary = QLabel()
        self.data_summary.setWordWrap(True)
        self.not_ready = QLabel()
        self.not_ready.setObjectName("trainNotReady")
        lines_high(self.not_ready, 2)
        self.not_ready.setStyleSheet("color: #a4262c;")
        form = QFormLayout()
        form.addRow("Base model", base_row)
        if version is not None and base_model is None:
            form.addRow("", self.continue_from)
        for label, widget in (("Version name", self.name), ("Kind", self.kind), ("Method", self.method),
                              ("", self.family_defaults), ("LoRA rank", self.lora_r), ("LoRA alpha", self.lora_alpha),
                              ("LoRA dropout", self.lora_dropout), ("Learning rate", self.lr), ("", self.auto_lr),
                              ("Epochs", self.epochs), ("Batch size", self.batch_size),
                              ("Validation share", self.val_ratio), ("", self.include_imports), ("", self.restyler),
                              ("", self.semantic), ("Data", self.data_summary)):
            form.addRow(label, widget)
        self.method.currentTextChanged.connect(self._method_changed)
        self._update_enabled()
        self.val_ratio.valueChanged.connect(self.refresh_data_summary)
        self.include_imports.toggled.connect(self.refresh_data_summary)
        self.kind.currentIndexChanged.connect(self.refresh_data_summary)

        self.chart = MetricChart()
        # Messages wrap in a fixed number of lines: nothing below them moves during a run.
        self.status = lines_high(QLabel("Ready"), 2)
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.verdict = lines_high(QLabel(), 2)
        self.verdict.setObjectName("trainVerdict")
        self.verdict.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.bar = QProgressBar()
        self.table = QTableWidget(len(METRICS), 2)
        self.table.setHorizontalHeaderLabels(["Base", "Trained"])
        self.table.setVerticalHeaderLabels([label for _, label in METRICS])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # Every metric row visible: the table is exactly as tall as its rows.
        self.table.resizeRowsToContents()
        height = self.table.horizontalHeader().sizeHint().height() + 2 * self.table.frameWidth()
        height += sum(self.table.rowHeight(r) for r in range(self.table.rowCount()))
        self.table.setFixedHeight(height)
        self.use_button = QPushButton("Make active and re-caption")
        self.use_button.setObjectName("trainUse")
        keep_place = self.use_button.sizePolicy()
        keep_place.setRetainSizeWhenHidden(True)
        self.use_button.setSizePolicy(keep_place)
        self.use_button.hide()
        self.use_button.clicked.connect(self._use_clicked)
        self.start_button = QPushButton("Train")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.use_button)
        buttons.addStretch(1)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        content = QWidget()
        inner = QVBoxLayout(content)
        inner.setContentsMargins(0, 0, 0, 0)
        inner.addLayout(form)
        # Below the form, full width: a wrapped label inside a form row gets clipped.
        inner.addWidget(self.not_ready)
        self.lr_curve = LrCurve()
        inner.addWidget(self.lr_curve)
        inner.addWidget(self.chart, 1)
        inner.addWidget(self.bar)
        inner.addWidget(self.status)
        inner.addWidget(self.table)
        inner.addWidget(self.verdict)
        # Settings and results scroll on a small screen; Train and Cancel stay in view below them.
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setWidget(content)
        layout = QVBoxLayout(self)
        layout.addWidget(self.scroll, 1)
        layout.addLayout(buttons)
        # A fixed width: neither long messages nor results make the dialog jump wider.
        self.setFixedWidth(560)
        self.refresh_data_summary()
        margins = layout.contentsMargins()
        wanted = content.sizeHint().height() + buttons.sizeHint().height() + layout.spacing() \
            + margins.top() + margins.bottom() + self.scroll.verticalScrollBar().sizeHint().width()
        fit_on_screen(self, QSize(560, wanted))

    def _continue_toggled(self, on: bool) -> None:
        self.base.setText(self.current.model if on else self.current.base_model)
        self.base.setEnabled(not on)
        self.browse_base.setEnabled(not on)
        self._update_enabled()

    def choose_base_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a base model folder", start_folder("models"))
        if folder:
            remember_folder("models", folder)
            self.base.setText(folder)

    def _use_clicked(self) -> None:
        if self.result is not None:
            self.use_button.setEnabled(False)
            self.use_requested.emit(self.result.name)

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
        self.lr.setValue(2e-5 if method == "full" else 1e-4)
        self._update_enabled()  # after: with the family's settings on, they set the rate

    def _update_enabled(self) -> None:
        method = self.method.currentText()
        lora_by_hand = method != "full" and not self.family_defaults.isChecked()
        for box in (self.lora_r, self.lora_alpha, self.lora_dropout):
            box.setEnabled(lora_by_hand)
        self.family_defaults.setEnabled(method != "full")
        self.lr.setEnabled((method == "full" or lora_by_hand) and not self.auto_lr.isChecked())
        self._show_family_defaults(method != "full" and self.family_defaults.isChecked())

    def _show_family_defaults(self, on: bool) -> None:
        """Show in the (disabled) LoRA fields the settings training will use for the base model.

        The family is read from the model's config.json (a folder or the Hugging Face cache);
        when it is not known before the model loads, the fields say "auto".  Turning the
        measured settings off leaves the shown values (or the general defaults) to edit.
        """
        from core.captioning.families.base import ModelFamily
        from core.captioning.registry import family_hint

        boxes = {"r": self.lora_r, "alpha": self.lora_alpha, "dropout": self.lora_dropout, "lr": self.lr}
        family = family_hint(self.base.text()) if on else None
        if on and family is None:
            for box in boxes.values():
                box.setSpecialValueText("auto")
                box.setValue(box.minimum())
            self.family_defaults.setToolTip(
                "The model's family is known once it loads; training then uses the rank, alpha, dropout and "
                "learning rate chosen for that family (README, \"LoRA defaults\", says how each was chosen).")
            return
        showing_auto = any(box.specialValueText() for box in boxes.values())
        for box in boxes.values():
            box.setSpecialValueText("")
        if on or showing_auto:
            values = (family or ModelFamily).lora_defaults
            for key, box in boxes.items():
                if key == "lr" and self.method.currentText() == "full":
                    continue  # full fine-tuning has its own rate (set with the method)
                box.setValue(values[key])
        if family is not None:
            self.family_defaults.setToolTip(f"Rank, alpha, dropout and learning rate chosen for the {family.id} "
                                            "family (README, \"LoRA defaults\", says how each was chosen).")

    def config(self) -> Any:
        from core.training import TrainingConfig
        from core.training.semantic_metrics import DEFAULT_BERTSCORE_MODEL, DEFAULT_CLIP_MODEL

        method = self.method.currentText()
        # lr None: the range test on the library's photos chooses it when the model has loaded.
        lr = None if self.auto_lr.isChecked() or self.lr.specialValueText() else self.lr.value()
        common: dict[str, Any] = {"method": method, "lr": lr, "epochs": self.epochs.value(),
                                  "batch_size": self.batch_size.value(), "val_ratio": self.val_ratio.value(),
                                  "include_imports": self.include_imports.isChecked()}
        if self.semantic.isChecked():
            common.update(bertscore_model=DEFAULT_BERTSCORE_MODEL, clip_model=DEFAULT_CLIP_MODEL)
        if method != "full" and self.family_defaults.isChecked():  # None: the family's measured defaults
            return TrainingConfig(kind=self.kind.currentData(), **common)
        return TrainingConfig(lora_r=self.lora_r.value(), lora_alpha=self.lora_alpha.value(),
                              lora_dropout=self.lora_dropout.value(), kind=self.kind.currentData(), **common)

    @Slot()
    def refresh_data_summary(self) -> None:
        from core.training import collect_training_data

        try:
            data = collect_training_data(self.library, val_ratio=self.val_ratio.value(),
                                         include_imports=self.include_imports.isChecked(), kind=self.kind.currentData())
        except Exception as exc:  # noqa: BLE001 - shown inline
            self.data_summary.setText(plain_error(str(exc)))
            self.set_ready(str(exc) and plain_error(str(exc)))
            return
        self.data_summary.setText(data.summary())
        label = self.kind.currentText().rsplit(" (", 1)[0].lower()
        values = "captions" if self.kind.currentData() == "caption" else label
        self.set_ready(not_ready_reason(len(data.train), len(data.validation), values))

    def set_ready(self, reason: str | None) -> None:
        """Enable Train, or disable it and say why in plain words (*reason*: the data's)."""
        self._data_reason = reason or None
        self._refresh_start()

    @property
    def running(self) -> bool:
        """This dialog's training run is on the model thread."""
        return self._run is not None

    def busy_reason(self) -> str | None:
        """Why the model thread cannot take a training run now (None: it can)."""
        if self._run is not None or self._service is None:
            return None
        job = self._service.model_job
        if job is not None and job.owner is self:
            return None  # this dialog's own run, still ending on the model thread
        return self._service.busy_reason("Training")

    @Slot()
    def _refresh_start(self) -> None:
        reason = self._data_reason or self.busy_reason()
        self.not_ready.setText(reason or "")
        self.start_button.setEnabled(not reason and self._run is None)
        self.start_button.setToolTip(reason or "")

    @Slot()
    def start(self) -> None:
        try:
            config = self.config()
        except ValueError as exc:
            self.status.setText(str(exc))
            return
        if self.restyler.isChecked():
            train_fn = restyler_train_fn()
        elif self._train_fn is None:
            from core.training import train as train_fn
        else:
            train_fn = self._train_fn
        library, base, name = self.library, self.base.text().strip(), self.name.text().strip()
        run = ModelJob(f"Training “{name}”",
                       lambda **callbacks: train_fn(library, base, name, config, **callbacks), owner=self)
        run.progress.connect(self._on_progress)
        run.epoch.connect(self.chart.add)
        run.finished.connect(self._on_finished)
        run.failed.connect(self._on_failed)
        run.cancel_requested.connect(self._on_cancel_requested)
        service = self._service
        if service is None:
            service = self._own_service = CaptionService(parent=self)
        # Set first: the service announces the new job before it returns, and the
        # dialog must see that job as its own, not as another one holding the thread.
        self._run = run
        if not service.start_model_job(run):
            self._run = None
            self.status.setText(self.busy_reason() or "The model thread is busy.")
            return
        self.chart.records.clear()
        self.lr_curve.show_result(None)
        self.verdict.clear()
        self.use_button.hide()
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText("Starting…")

    @Slot()
    def cancel(self) -> None:
        if self._run is not None:
            self._run.request_cancel()

    @Slot()
    def _on_cancel_requested(self) -> None:
        """Cancelled here or from the main window's status bar: say so, once."""
        self.cancel_button.setEnabled(False)
        self.status.setText("Stopping after the current batch…")

    def _keep_if_unseen(self) -> None:
        # The run ended while the dialog was closed: Train brings this dialog (and its
        # result or error) back instead of a blank one.
        self.unseen_result = not self.isVisible()

    def showEvent(self, event: Any) -> None:
        self.unseen_result = False
        super().showEvent(event)

    @Slot(object)
    def _on_progress(self, progress: Any) -> None:
        if progress.total:
            self.bar.setMaximum(int(progress.total))
            self.bar.setValue(int(progress.done))
        self.status.setText(progress.message)

    def _done(self) -> None:
        self.cancel_button.setEnabled(False)
        if self._run is not None:
            self._run.deleteLater()
            self._run = None
        self._stop_own_service()
        self._refresh_start()

    def _stop_own_service(self) -> None:
        if self._own_service is not None:
            self._own_service.shutdown()
            self._own_service.deleteLater()
            self._own_service = None

    @Slot(object)
    def _on_finished(self, result: Any) -> None:
        self.result = result
        self._keep_if_unseen()
        self._done()
        if result.cancelled:
            self.status.setText("Cancelled. Start again with the same name and settings to resume.")
            return
        intervals = (getattr(result, "intervals", None) or {}).get("validation", {})
        for row, (key, _) in enumerate(METRICS):
            test = getattr(result, "test_metrics", None) or {}
            pairs = (((result.base_test_metrics, "base"), (test, "trained")) if key in SEMANTIC and key in test
                     else ((result.base_metrics, "base"), (result.metrics, "trained")))
            for col, (metrics, which) in enumerate(pairs):
                value = metrics.get(key)
                text = "-" if value is None else f"{value:.3f}"
                interval = intervals.get(which, {}).get(key)
                if interval and value is not None:
                    text += f" ({interval[0]:.2f}–{interval[1]:.2f})"
                self.table.setItem(row, col, QTableWidgetItem(text))
        self.status.setText(f"Saved version “{result.name}” (best epoch {result.best_epoch}).")
        self.lr_curve.show_result(getattr(result, "lr_range", None))
        beat, sentence = result_verdict(result)
        self.verdict.setText(sentence)
        self.verdict.setStyleSheet("color: #107c10;" if beat else "color: #a4262c;")
        # Switching to a version that did not improve would only cost a re-captioning run; a restyler
        # captions nothing, and another kind's version is activated for that kind in Model → Versions.
        offer = beat and not self.restyler.isChecked() and self.kind.currentData() == "caption"
        self.use_button.setVisible(offer)
        self.use_button.setEnabled(offer)
        self.version_created.emit(result.name)

    @Slot(str, str)
    def _on_failed(self, message: str, _detail: str = "") -> None:
        self._keep_if_unseen()
        self._done()
        self.status.setText(plain_error(message))

    def closeEvent(self, event: Any) -> None:
        # A run on the window's model thread goes on (the status bar shows it, with Show
        # and Cancel): training takes long, and the person may want to review meanwhile.
        # A run on a thread of the dialog's own stops with it.
        self._stop_own_run()
        super().closeEvent(event)

    def done(self, result: int) -> None:
        # Escape (reject) hides the dialog without a close event.
        self._stop_own_run()
        super().done(result)

    def _stop_own_run(self) -> None:
        if self._own_service is not None:
            self.cancel()
            self._stop_own_service()
