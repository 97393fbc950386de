"""Model → Versions…: the trained model versions of this library (``captiondesk models`` / ``eval``).

A table of every :class:`~core.models.ModelVersion` (what it is: captioner or restyler, base
model, method, date, how many images or caption pairs it was trained and validated on, CIDEr
and exact match before and after training, which one is active) with Activate, Rename,
Delete, Evaluate and Export merged; for a restyler, Activate makes it the active restyler
(the active captioner stays) and Evaluate scores it on its held-out caption pairs.  The
quick actions call :mod:`core.training.versions` directly (one small transaction each);
Evaluate (:func:`core.training.evaluate_model`) and Export merged
(:func:`core.training.versions.export_merged`) load a model, so they run on a
:class:`~desktop_app.dialog_kit.JobRunner` with progress and Cancel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.captioning import DEFAULT_MODEL  # torch-free: core.captioning imports torch lazily
from core.kinds import BUILTIN_KINDS, CAPTION
from core.training import versions
from core.training.current import current_model, library_base_model, use_base_model
from desktop_app.dialog_kit import ElidedLabel, JobFooter, JobRunner, compact_table, show_folder

COLUMNS = ("Active", "Name", "Target", "Kind", "Base model", "Method", "Learning rate", "Created", "Train / val",
           "CIDEr", "Exact match", "Beats base", "BERTScore F1", "CLIPScore")
#: The columns whose cells get their own tooltip (the base model's whole id or path, the rate's note, the comparison).
BASE_MODEL_COLUMN, LEARNING_RATE_COLUMN, BEATS_BASE_COLUMN = (COLUMNS.index("Base model"), COLUMNS.index("Learning rate"),
                                                           COLUMNS.index("Beats base"))
#: Header tooltips: what the short headers mean.
COLUMN_TIPS = {COLUMNS.index(name): tip for name, tip in (
    ("Target", "Captioner (describes photos) or restyler (rewrites a captioner's captions in a style)"),
    ("Kind", "The caption kind the version learnt and writes: Activate makes it that kind's model"),
    ("Learning rate", "The run's learning rate; \"range test\": chosen on the library's photos (the tip says how)"),
    ("Train / val", "Images (a restyler: caption pairs) trained on / held out for validation"),
    ("CIDEr", "CIDEr of the base model → after training"),
    ("Exact match", "Share of validation captions matched exactly: base model → after training"),
    ("Beats base", "Whether the version beat its base model by more than the noise of its evaluation photos "
                   "(a 95 % interval of the difference above 0; on the test photos when there were enough)"),
    ("BERTScore F1", "BERTScore F1 of the base model → after training, on the held-out photos (test when there "
                     "were enough); – when not computed (training with a BERTScore model, or Evaluate)"),
    ("CLIPScore", "CLIPScore (2.5 · max(cos, 0)) of the base model → after training, on the held-out photos; "
                  "– when not computed"),
)}


def _metric(metrics: dict[str, Any], key: str) -> str:
    value = metrics.get(key)
    return f"{value:.3f}" if isinstance(value, (int, float)) else "–"


#: The first row: the library's base model, what captions when no version is active.
BASE_ROW_NAME = "Base model"


def base_row(model: str, active: bool) -> list[str]:
    """The cells of the base-model row (*active*: no version is, so this model captions)."""
    short = Path(model).name if Path(model).is_absolute() else model
    return ["★" if active else "", BASE_ROW_NAME, CAPTIONER, "–", short, *["–"] * (len(COLUMNS) - 5)]


CAPTIONER, RESTYLER = "Captioner", "Restyler"


def target_of(version: Any) -> str:
    """"Restyler" for a trained restyler version, else "Captioner"."""
    return RESTYLER if versions.is_restyler(version) else CAPTIONER


def kind_label(version: Any) -> str:
    """The caption kind *version* learnt, as a person reads it."""
    kind = versions.version_kind(version)
    return BUILTIN_KINDS[kind].label if kind in BUILTIN_KINDS else kind


def version_row(version: Any, active_restyler: str | None = None) -> list[str]:
    """The table cells of one version (also what tests compare against); a restyler is starred
    when it is *active_restyler*."""
    restyler = versions.is_restyler(version)
    active = version.name == active_restyler if restyler else version.is_active
    metrics = version.metrics or {}
    base, trained = metrics.get("base") or {}, metrics.get("trained") or {}
    data = version.data_snapshot or {}
    base_model = (version.config or {}).get("trained_from", version.base_model)
    return [
        "★" if active else "",
        version.name,
        target_of(version),
        kind_label(version),
        Path(base_model).name if Path(str(base_model)).is_absolute() else str(base_model),
        version.method or "–",
        learning_rate_cell(version.config or {}),
        f"{version.created_at:%Y-%m-%d %H:%M}" if version.created_at else "–",
        f"{len(data.get('train') or [])} / {len(data.get('validation') or [])}" if data else "–",
        f"{_metric(base, 'cider')} → {_metric(trained, 'cider')}",
        f"{_metric(base, 'exact_match')} → {_metric(trained, 'exact_match')}",
        beats_base_cell(metrics),
        *(_held_out_pair(metrics, key) for key in ("bertscore_f1", "clipscore")),
    ]


def _held_out_pair(metrics: dict[str, Any], key: str) -> str:
    """``base → trained`` of a model-based metric on the held-out split (test when stored), or "–"."""
    test = metrics.get("test") or {}
    base, trained = ((test.get("base") or {}, test.get("trained") or {}) if key in (test.get("trained") or {})
                     else (metrics.get("base") or {}, metrics.get("trained") or {}))
    return f"{_metric(base, key)} → {_metric(trained, key)}" if key in trained else "–"


def learning_rate_cell(config: dict[str, Any]) -> str:
    """The run's rate, "(range test)" when the range test chose it."""
    lr = config.get("lr")
    if not isinstance(lr, (int, float)):
        return "–"
    return f"{lr:.1e}" + (" (range test)" if config.get("lr_range") else "")


def learning_rate_tip(config: dict[str, Any]) -> str:
    """How the rate was chosen: the range test's note (published range), or "set by hand"."""
    from core.training.lr_range import LrRangeResult

    if config.get("lr_range"):
        return "Range test: " + LrRangeResult.from_dict(config["lr_range"]).note()
    return "Set by hand" if isinstance(config.get("lr"), (int, float)) else ""


def beats_base_tip(metrics: dict[str, Any]) -> str:
    """The stored comparison in core's words (on the test photos when there were enough)."""
    from core.training.metrics import comparison_sentence

    comparison = metrics.get("comparison") or {}
    if not comparison:
        return "Trained before versions recorded whether they beat the base model"
    where = "test" if "test" in comparison else "validation"
    text = comparison_sentence(comparison[where], where)
    return text[0].upper() + text[1:]


def beats_base_cell(metrics: dict[str, Any]) -> str:
    """"yes", "no (within noise)" or "–" for versions trained before the comparison was stored."""
    if "beats_base" not in metrics:
        return "–"
    return "yes" if metrics["beats_base"] else "no (within noise)"


ACTIVATE_TIP = ("Make this the library's current model: captioning (here and in the CLI) uses it, and "
                "training starts from it")
EVALUATE_TIP = "Caption the validation split with this version and score it against the verified captions"
ACTIVATE_RESTYLER_TIP = ("Make this the library's active restyler: Caption images… → Then restyle and `restyle` "
                         "use it; the active captioner stays")
EVALUATE_RESTYLER_TIP = ("Restyle the held-out caption pairs (test pairs when there are enough) with this "
                         "restyler and score the result against the people's captions")
EXPORT_TIP = "Write a standalone model folder (LoRA merged into the base) that plain transformers loads"


def activate_text(version: Any) -> str:
    """The Activate button's words for a captioner: which kind's active model it becomes."""
    return "Activate" if version is None else f"Activate for {kind_label(version)}"


def activate_tip(version: Any) -> str:
    if version is None or versions.version_kind(version) == CAPTION:
        return ACTIVATE_TIP
    label, kind = kind_label(version).lower(), versions.version_kind(version)
    return (f"Make this the library's model for {label}: captioning {label} (here and with caption --kind "
            f"{kind}) uses it; the caption's model stays")


class VersionsWindow(QDialog):
    """List, activate, rename, delete, evaluate and export the library's model versions."""

    #: The versions changed (activated, renamed, deleted): the main window may refresh.
    changed = Signal()
    #: An evaluation finished: its core.training.evaluation.EvalResult.
    evaluated = Signal(object)

    def __init__(self, library: Any, *, device: str = "auto", service: Any = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Model versions")
        self.resize(960, 460)
        self.library = library
        self.device = device
        self.result: Any = None
        # Evaluate and Export merged load a model: in the window they run on its model
        # thread (*service*), taking turns with captioning and training.
        self.service = service
        self.runner = JobRunner(self, model_thread=service)
        self._job = ""
        #: What the running job is about ("version “x”", "base model y"): its result says so.
        self._about = ""

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        compact_table(self.table)
        for column, tip in COLUMN_TIPS.items():
            self.table.horizontalHeaderItem(column).setToolTip(tip)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        for column, width in enumerate((50, 190, 80, 80, 180, 60, 120, 80, 110, 110)):
            self.table.setColumnWidth(column, width)
        self.detail = ElidedLabel("")
        self.activate_button = QPushButton("Activate")
        self.rename_button = QPushButton("Rename…")
        self.delete_button = QPushButton("Delete…")
        self.evaluate_button = QPushButton("Evaluate")
        self.export_button = QPushButton("Export merged…")
        self.activate_button.setToolTip(ACTIVATE_TIP)
        self.evaluate_button.setToolTip(EVALUATE_TIP)
        self.export_button.setToolTip(EXPORT_TIP)
        actions = QHBoxLayout()
        for button in (self.activate_button, self.rename_button, self.delete_button, self.evaluate_button,
                       self.export_button):
            actions.addWidget(button)
        actions.addStretch(1)
        self.footer = JobFooter("Evaluate")
        self.footer.start_button.hide()  # the row of actions above starts the jobs
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.detail)
        layout.addLayout(actions)
        layout.addWidget(self.footer)

        self.activate_button.clicked.connect(self.activate_selected)
        self.rename_button.clicked.connect(lambda: self.rename_selected())
        self.delete_button.clicked.connect(lambda: self.delete_selected())
        self.evaluate_button.clicked.connect(self.evaluate_selected)
        self.export_button.clicked.connect(lambda: self.export_selected())
        self.footer.cancel_button.clicked.connect(self.runner.cancel)
        self.footer.close_button.clicked.connect(self.close)
        self.runner.progress.connect(self.footer.show_progress)
        self.runner.finished.connect(self._on_finished)
        self.runner.failed.connect(lambda message, _detail: self._job_done(message))
        self.runner.cancel_requested.connect(self._on_cancel_requested)
        #: The last job ended while the window was closed; nobody has seen how yet.
        self.unseen_result = False
        self.table.itemSelectionChanged.connect(self._update_buttons)
        if service is not None:
            service.state_changed.connect(self._update_buttons)
        self.refresh()

    # -- table --------------------------------------------------------------------------

    def refresh(self, select: str | None = None) -> None:
        select = select or self.selected_name() or (BASE_ROW_NAME if self.base_selected() else None)
        self.versions = versions.list_versions(self.library)
        self.current = current_model(self.library)
        active_restyler = versions.get_active_restyler(self.library)
        self.active_restyler = active_restyler.name if active_restyler is not None else None
        self.base_model = library_base_model(self.library) or DEFAULT_MODEL
        self.table.setRowCount(len(self.versions) + 1)
        for column, text in enumerate(base_row(self.base_model, self.current.version is None)):
            item = QTableWidgetItem(text)
            item.setToolTip(self.base_model if column == BASE_MODEL_COLUMN else
                            "What captions when no version is active (Preferences → Current model changes it)")
            self.table.setItem(0, column, item)
        if select == BASE_ROW_NAME:
            self.table.selectRow(0)
        for row, version in enumerate(self.versions, start=1):
            for column, text in enumerate(version_row(version, self.active_restyler)):
                item = QTableWidgetItem(text)
                item.setToolTip(version.base_model if column == BASE_MODEL_COLUMN else
                                learning_rate_tip(version.config or {}) if column == LEARNING_RATE_COLUMN else
                                beats_base_tip(version.metrics or {}) if column == BEATS_BASE_COLUMN else text)
                self.table.setItem(row, column, item)
            if version.name == select:
                self.table.selectRow(row)
        if not self.versions:
            self.detail.setText("No trained versions yet: Caption → Train on verified captions… makes one.")
        self._update_buttons()

    def _selected_row(self) -> int | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return rows[0].row() if rows else None

    def base_selected(self) -> bool:
        """The base-model row is selected."""
        return self._selected_row() == 0 and hasattr(self, "versions")

    def selected_name(self) -> str | None:
        """The selected version's name (None: none, or the base-model row)."""
        row = self._selected_row()
        if row is None or row == 0 or row > len(getattr(self, "versions", [])):
            return None
        return self.versions[row - 1].name

    def select(self, name: str) -> None:
        """Select version *name*, or the base-model row for :data:`BASE_ROW_NAME`."""
        if name == BASE_ROW_NAME:
            self.table.selectRow(0)
        for row, version in enumerate(self.versions, start=1):
            if version.name == name:
                self.table.selectRow(row)

    def _update_buttons(self) -> None:
        name = self.selected_name()
        base = self.base_selected()
        idle = not self.runner.running
        for button in (self.activate_button, self.rename_button, self.delete_button, self.evaluate_button,
                       self.export_button):
            button.setEnabled(name is not None and idle)
        # The base model can be made current again and scored; it is no version to rename or delete.
        for button in (self.activate_button, self.evaluate_button):
            if base and idle:
                button.setEnabled(True)
        chosen = next((v for v in self.versions if v.name == name), None)
        restyler = chosen is not None and versions.is_restyler(chosen)
        self.activate_button.setText("Use base model" if base else "Activate as restyler" if restyler
                                     else activate_text(chosen))
        self.activate_button.setToolTip("Deactivate the active version: captioning uses the base model again"
                                        if base else ACTIVATE_RESTYLER_TIP if restyler else activate_tip(chosen))
        if restyler and chosen.name == self.active_restyler:
            self.activate_button.setEnabled(False)  # already the active restyler
        if chosen is not None and (chosen.metrics or {}).get("beats_base") is False:
            # Still possible, but not presented as the obvious next model.
            self.activate_button.setToolTip(beats_base_tip(chosen.metrics) + ". Activate it anyway?")
        # The model thread is captioning or training: the jobs that load a model wait.
        for button, tip, wanted in ((self.evaluate_button, EVALUATE_RESTYLER_TIP if restyler else EVALUATE_TIP,
                                     "Evaluating"),
                                    (self.export_button, EXPORT_TIP, "Writing a merged model")):
            waiting = self.service.busy_reason(wanted) if self.service is not None and idle else None
            button.setToolTip(waiting or tip)
            if waiting:
                button.setEnabled(False)
        version = next((v for v in self.versions if v.name == name), None)
        if version is not None:
            where = version.adapter_path or version.base_model
            self.detail.setText(f"{version.name}: {where}")
        elif base:
            self.detail.setText(f"Base model: {self.base_model}")

    # -- quick actions ----------------------------------------------------------------------

    def _guarded(self, action: Any) -> bool:
        try:
            action()
        except (versions.VersionError, ValueError) as exc:
            self.footer.status.setText(str(exc))
            return False
        self.changed.emit()
        return True

    def activate_selected(self) -> bool:
        """Make the selected version the current model, or (base-model row) deactivate versions."""
        if self.base_selected():
            ok = self._guarded(lambda: use_base_model(self.library))
            if ok:
                self.footer.status.setText(f"No version is active: captioning uses the base model "
                                           f"{self.base_model}.")
            self.refresh(BASE_ROW_NAME)
            return ok
        name = self.selected_name()
        if name is None:
            return False
        ok = self._guarded(lambda: versions.set_active(self.library, name))
        restyler = any(v.name == name and versions.is_restyler(v) for v in self.versions)
        chosen = next((v for v in self.versions if v.name == name), None)
        if ok and restyler:
            self.footer.status.setText(f"{name} is now the active restyler: Then restyle uses it; "
                                       "the active captioner stays.")
        elif ok and chosen is not None and versions.version_kind(chosen) != CAPTION:
            label = kind_label(chosen).lower()
            self.footer.status.setText(f"{name} is now the active model for {label}: captioning {label} uses it; "
                                       "the caption's model stays.")
        elif ok:
            self.footer.status.setText(f"{name} is now the active model: captioning uses it.")
        self.refresh(name)
        return ok

    def rename_selected(self, new_name: str | None = None) -> bool:
        old = self.selected_name()
        if old is None:
            return False
        if new_name is None:
            new_name, accepted = QInputDialog.getText(self, "Rename version", "New name:", text=old)
            if not accepted:
                return False
        new_name = new_name.strip()
        ok = self._guarded(lambda: versions.rename_version(self.library, old, new_name))
        if ok:
            self.footer.status.setText(f"Renamed {old} to {new_name}.")
        self.refresh(new_name if ok else old)
        return ok

    def delete_selected(self, *, confirm: bool = True) -> bool:
        name = self.selected_name()
        if name is None:
            return False
        if confirm:
            answer = QMessageBox.question(
                self, "Delete version",
                f"Delete the model version “{name}” and its files? Captions it wrote stay in the library.")
            if answer != QMessageBox.StandardButton.Yes:
                return False
        ok = self._guarded(lambda: versions.delete_version(self.library, name))
        if ok:
            self.footer.status.setText(f"Deleted {name}.")
        self.refresh()
        return ok

    # -- jobs -------------------------------------------------------------------------------

    def evaluate_selected(self, *, val_ratio: float | None = None, seed: int | None = None) -> bool:
        """Score the selected version on the held-out split it was trained with (a restyler: its
        held-out caption pairs; the base model: the default split)."""
        name = self.base_model if self.base_selected() else self.selected_name()
        if name is None or self.runner.running:
            return False
        version = next((v for v in self.versions if v.name == name), None)
        library, device = self.library, self.device

        def work(progress: Any, cancel: Any) -> Any:
            from core.training import evaluate_model

            # None: a version is scored on the split it was trained with (core reads it).
            return evaluate_model(library, name, val_ratio=val_ratio, seed=seed, device=device,
                                  progress=progress, cancel=cancel)

        self._about = f"version “{name}”" if version is not None else f"base model {Path(name).name}"
        if not self.runner.start(work, f"Evaluating “{name}”"):
            self._refused("Evaluating")
            return False
        self._job = "evaluate"
        self.footer.set_running(True, f"Evaluating {self._about}…")
        self._update_buttons()
        return True

    def export_selected(self, out: str | None = None) -> bool:
        name = self.selected_name()
        if name is None or self.runner.running:
            return False
        if out is None:
            parent = QFileDialog.getExistingDirectory(self, "Export the merged model into")
            if not parent:
                return False
            out = str(Path(parent) / f"{name}-merged")
        library, device = self.library, "cpu" if self.device == "auto" else self.device
        self._about = f"version “{name}”"

        def work(_progress: Any, _cancel: Any) -> Any:
            return versions.export_merged(library, name, out, device=device)

        # Merging cannot stop halfway (it writes one folder of weights): no Cancel.
        if not self.runner.start(work, f"Writing “{name}” as a standalone model", cancellable=False):
            self._refused("Writing a merged model")
            return False
        self._job = "export"
        self.footer.set_running(True, f"Writing {name} as a standalone model…")
        self.footer.cancel_button.setEnabled(False)
        self._update_buttons()
        return True

    def _refused(self, wanted: str) -> None:
        """The model thread is busy: say why in the footer."""
        reason = self.service.busy_reason(wanted) if self.service is not None else None
        self.footer.status.setText(reason or "Another job is running.")

    def _on_finished(self, result: Any) -> None:
        self.result = result
        if self._job == "evaluate":
            m = result.metrics
            semantic = "".join(f", {label} {_metric(m, key)}" for key, label in
                               (("bertscore_f1", "BERTScore F1"), ("clipscore", "CLIPScore")) if key in m)
            pairs = (result.split or {}).get("held_out")  # a restyler: its test or validation caption pairs
            scored = (f"held-out caption pairs ({pairs})" if pairs
                      else f"{(result.split or {}).get('scored', 'validation')} images")
            self._job_done(f"{self._about}: CIDEr {_metric(m, 'cider')}, exact match "
                           f"{_metric(m, 'exact_match')}, BLEU-4 {_metric(m, 'bleu4')}{semantic} on {m.get('n', 0)} "
                           f"{scored}")
            self.footer.status.setToolTip("\n".join(getattr(result, "notes", []) or []))
            self.evaluated.emit(result)
        else:
            self._job_done(f"Exported to {result} ({self._about})")
            self.footer.buttons.insertWidget(1, show := QPushButton("Show folder"))
            show.clicked.connect(lambda: show_folder(result))

    def _on_cancel_requested(self) -> None:
        """Cancelled here or from the main window's status bar."""
        self.footer.cancel_button.setEnabled(False)
        self.footer.status.setText("Cancelling after the current batch…")

    def showEvent(self, event: Any) -> None:
        self.unseen_result = False
        super().showEvent(event)

    def _job_done(self, message: str) -> None:
        self.unseen_result = not self.isVisible()
        self.footer.finish(message)
        self.footer.start_button.hide()
        self._update_buttons()

    def closeEvent(self, event: Any) -> None:
        # A job on the window's model thread goes on (the status bar shows it); one on
        # this window's own thread stops with it.
        if self.runner.model_thread is None:
            self.runner.shutdown()
        super().closeEvent(event)
