"""Model → Versions…: the trained model versions of this library (``captiondesk models`` / ``eval``).

A table of every :class:`~core.models.ModelVersion` (base model, method, date, how many
images it was trained and validated on, CIDEr and exact match before and after training,
which one is active) with Activate, Rename, Delete, Evaluate and Export merged.  The
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
from core.training import versions
from core.training.current import current_model, library_base_model, use_base_model
from desktop_app.dialog_kit import ElidedLabel, JobFooter, JobRunner, compact_table, show_folder

COLUMNS = ("Active", "Name", "Base model", "Method", "Learning rate", "Created", "Train / val", "CIDEr", "Exact match", "Beats base")
#: Header tooltips: what the short headers mean.
COLUMN_TIPS = {4: "The run's learning rate; \"range test\": chosen on the library's photos (the tip says how)",
               6: "Images trained on / held out for validation", 7: "CIDEr of the base model → after training",
               8: "Share of validation captions matched exactly: base model → after training",
               9: "Whether the version beat its base model by more than the noise of its evaluation photos "
                  "(a 95 % interval of the difference above 0; on the test photos when there were enough)"}


def _metric(metrics: dict[str, Any], key: str) -> str:
    value = metrics.get(key)
    return f"{value:.3f}" if isinstance(value, (int, float)) else "–"


#: The first row: the library's base model, what captions when no version is active.
BASE_ROW_NAME = "Base model"


def base_row(model: str, active: bool) -> list[str]:
    """The cells of the base-model row (*active*: no version is, so this model captions)."""
    short = Path(model).name if Path(model).is_absolute() else model
    return ["★" if active else "", BASE_ROW_NAME, short, "–", "–", "–", "–", "–", "–", "–"]


def version_row(version: Any) -> list[str]:
    """The table cells of one version (also what tests compare against)."""
    metrics = version.metrics or {}
    base, trained = metrics.get("base") or {}, metrics.get("trained") or {}
    data = version.data_snapshot or {}
    base_model = (version.config or {}).get("trained_from", version.base_model)
    return [
        "★" if version.is_active else "",
        version.name,
        Path(base_model).name if Path(str(base_model)).is_absolute() else str(base_model),
        version.method or "–",
        learning_rate_cell(version.config or {}),
        f"{version.created_at:%Y-%m-%d %H:%M}" if version.created_at else "–",
        f"{len(data.get('train') or [])} / {len(data.get('validation') or [])}" if data else "–",
        f"{_metric(base, 'cider')} → {_metric(trained, 'cider')}",
        f"{_metric(base, 'exact_match')} → {_metric(trained, 'exact_match')}",
        beats_base_cell(metrics),
    ]


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
EXPORT_TIP = "Write a standalone model folder (LoRA merged into the base) that plain transformers loads"


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
        for column, width in enumerate((50, 210, 200, 60, 120, 80, 110, 110)):
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
        self.base_model = library_base_model(self.library) or DEFAULT_MODEL
        self.table.setRowCount(len(self.versions) + 1)
        for column, text in enumerate(base_row(self.base_model, self.current.version is None)):
            item = QTableWidgetItem(text)
            item.setToolTip(self.base_model if column == 2 else
                            "What captions when no version is active (Preferences → Current model changes it)")
            self.table.setItem(0, column, item)
        if select == BASE_ROW_NAME:
            self.table.selectRow(0)
        for row, version in enumerate(self.versions, start=1):
            for column, text in enumerate(version_row(version)):
                item = QTableWidgetItem(text)
                item.setToolTip(version.base_model if column == 2 else learning_rate_tip(version.config or {})
                                if column == 4 else beats_base_tip(version.metrics or {}) if column == 9 else text)
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
        self.activate_button.setText("Use base model" if base else "Activate")
        self.activate_button.setToolTip("Deactivate the active version: captioning uses the base model again"
                                        if base else ACTIVATE_TIP)
        chosen = next((v for v in self.versions if v.name == name), None)
        if chosen is not None and (chosen.metrics or {}).get("beats_base") is False:
            # Still possible, but not presented as the obvious next model.
            self.activate_button.setToolTip(beats_base_tip(chosen.metrics) + ". Activate it anyway?")
        # The model thread is captioning or training: the jobs that load a model wait.
        for button, tip, wanted in ((self.evaluate_button, EVALUATE_TIP, "Evaluating"),
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
        if ok:
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
        """Score the selected version on the validation split it was trained with (the base model:
        on the default split)."""
        name = self.base_model if self.base_selected() else self.selected_name()
        if name is None or self.runner.running:
            return False
        version = next((v for v in self.versions if v.name == name), None)
        data = (version.data_snapshot if version is not None else None) or {}
        ratio = val_ratio if val_ratio is not None else float(data.get("val_ratio", 0.1))
        split_seed = seed if seed is not None else int(data.get("seed", 0))
        library, device = self.library, self.device

        def work(progress: Any, cancel: Any) -> Any:
            from core.training import evaluate_model

            return evaluate_model(library, name, val_ratio=ratio, seed=split_seed, device=device,
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
            self._job_done(f"{self._about}: CIDEr {_metric(m, 'cider')}, exact match "
                           f"{_metric(m, 'exact_match')}, BLEU-4 {_metric(m, 'bleu4')} on {m.get('n', 0)} "
                           "validation images")
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
