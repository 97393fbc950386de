"""Dialogs: batch captioning, find-and-replace, and the About box's text.

The captioning dialog only collects choices into a
:class:`~core.captioning.job_spec.CaptionJobSpec` (the one the CLI builds too) plus a scope
choice that the window turns into the spec's scope; it imports only the torch-free parts
of ``core.captioning``, so it opens instantly.  The spin-box ranges keep the values
``GenerationSettings`` would refuse out.
"""

from __future__ import annotations

import platform
import sqlite3
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6 import __version__ as pyside_version
from PySide6.QtCore import Qt, qVersion
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from core import __version__ as core_version
from core.captioning import DEFAULT_MODEL  # torch-free: core.captioning imports torch lazily
from core.captioning.job_spec import CaptionJobSpec, GenerationSettings
from core.captioning.presets import PRESETS, VARIABLES
from core.kinds import BUILTIN_KINDS
from core.restyle.spec import RestyleSpec
from desktop_app.dialog_kit import ElidedLabel, remember_folder, start_folder

if TYPE_CHECKING:
    from core.training.current import CurrentModel

#: Views the Confidence box checks (benchmarks/confidence.py: two already rank one-word errors first).
DIALOG_VIEW_CHECKS = 2
SCOPE_SELECTION = "selection"
SCOPE_FILTER = "filter"
SCOPE_UNCAPTIONED = "uncaptioned"
#: Everything not captioned by a person or by this model version (after retraining).
SCOPE_LIBRARY = "library"


class CaptionDialog(QDialog):
    """Pick model, adapter, generation settings and scope for a captioning job."""

    def __init__(
        self,
        *,
        defaults: CaptionJobSpec,
        known_models: list[str],
        selection_count: int,
        filter_count: int,
        uncaptioned_count: int | None,
        versions: list[str] = (),
        current: CurrentModel | None = None,
        restylers: list[str] = (),
        kinds: list[tuple[str, str]] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Caption images")
        self._defaults = defaults
        settings = defaults.generation

        self.model = QComboBox()
        self.model.setEditable(True)
        self.model.setToolTip("A Hugging Face hub id, a local model folder, or a model version name")
        # The library's model versions first, so a trained one is a pick away.
        for name in dict.fromkeys([defaults.model, *versions, DEFAULT_MODEL, *known_models]):
            self.model.addItem(name)
            if name in versions:
                self.model.setItemData(self.model.count() - 1, "A trained version of this library",
                                       Qt.ItemDataRole.ToolTipRole)
        self.model.setCurrentText(defaults.model)
        # One line (a wrapped label in a form row gets clipped), cut at its end so the version's
        # name and "(active)" stay readable; the tooltip says it all.
        self.current_note = ElidedLabel(f"Current model: {current.describe()}" if current is not None else "",
                                        mode=Qt.TextElideMode.ElideRight)
        self.current_note.setObjectName("currentModelNote")
        if current is not None:
            self.current_note.setToolTip(f"The library's current model: {current.describe()}. Another pick here "
                                         "is for this run only; Model → Versions changes the current one.")
        self.current_note.setVisible(current is not None)
        model_browse = QPushButton("Folder…")
        model_browse.clicked.connect(lambda: self._browse(self.model.setCurrentText, "Choose a model folder"))
        self.adapter = QLineEdit(defaults.adapter or "")
        self.adapter.setPlaceholderText("none (plain base model)")
        adapter_browse = QPushButton("Folder…")
        adapter_browse.clicked.connect(lambda: self._browse(self.adapter.setText, "Choose a trained adapter folder"))

        self.num_beams = QSpinBox()
        self.num_beams.setRange(1, 16)
        self.num_beams.setValue(settings.num_beams)
        self.num_beams.setToolTip("1 = greedy decoding, the fastest on a CPU")
        self.min_tokens = QSpinBox()
        self.min_tokens.setRange(0, 200)
        self.min_tokens.setValue(settings.min_new_tokens)
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 512)
        self.max_tokens.setValue(settings.max_new_tokens)
        self.min_tokens.valueChanged.connect(lambda v: self.max_tokens.setMinimum(max(1, v)))
        # Which of each photo's values to write: (name, label) of the library's kinds.
        self.kind = QComboBox()
        for name, label in kinds or [(k.name, k.label) for k in BUILTIN_KINDS.values()]:
            self.kind.addItem(label, name)
        self.kind.setCurrentIndex(max(0, self.kind.findData(defaults.kind)))
        self.kind.setToolTip("Caption, alt text, title, keywords…: each photo keeps one of each, with its own "
                             "history. Other kinds than Caption need a model that takes a prompt (not BLIP, GIT).")
        self.preset = QComboBox()
        self.preset.addItem("Model default (the kind's own for other kinds)", None)
        for preset in PRESETS.values():
            self.preset.addItem(preset.label, preset.id)
        self.preset.setCurrentIndex(max(0, self.preset.findData(defaults.preset)))
        self.preset.setToolTip("What kind of caption to ask for.  BLIP-like models only continue a text prefix: "
                               "they write short captions, alt text and training prompts, not descriptions or keywords.")
        self.prompt = QLineEdit(defaults.prompt_template or settings.prompt or "")
        self.prompt.setPlaceholderText("your own prompt (instead of a preset)")
        self.prompt.setToolTip("A prefix (BLIP-like models) or an instruction; per-image variables: "
                               + ", ".join("{" + v + "}" for v in VARIABLES))
        self.prompt.textChanged.connect(lambda text: self.preset.setEnabled(not text.strip()))
        self.preset.setEnabled(not self.prompt.text().strip())
        self.repetition = QDoubleSpinBox()
        self.repetition.setRange(0.5, 3.0)
        self.repetition.setSingleStep(0.05)
        self.repetition.setValue(settings.repetition_penalty)
        self.batch_size = QSpinBox()
        self.batch_size.setRange(1, 256)
        self.batch_size.setValue(defaults.batch_size)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda", "mps"])
        self.device.setCurrentText(defaults.device)
        self.check_views = QCheckBox("Check each caption against 2 shifted views (3× the work)")
        self.check_views.setChecked(defaults.check_views > 0)
        self.check_views.setToolTip("Captions each photo again from slightly shifted copies; a caption they disagree "
                                    "with goes first in the review queue. Finds one-word errors the model's own "
                                    "confidence misses. Local models only.")
        self.overwrite = QCheckBox("Replace existing model captions (a person's captions are never replaced)")
        self.overwrite.setChecked(defaults.overwrite_model_captions)

        # Where the model runs: here, or on an OpenAI-compatible server (Ollama, ...).
        self.backend = QComboBox()
        self.backend.addItem("Local model", "local")
        self.backend.addItem("Model server (OpenAI-compatible)", "openai")
        self.backend.setCurrentIndex(max(0, self.backend.findData(defaults.backend)))
        self.endpoint = QLineEdit(defaults.endpoint or "")
        self.endpoint.setPlaceholderText("http://localhost:11434/v1")
        self.endpoint.setToolTip("The server's base URL. An API key, if needed, comes from "
                                 "$CAPTIONDESK_API_KEY, $OPENAI_API_KEY or the OS keyring; it is never stored.")
        self.refresh_models = QPushButton("Refresh models")
        self.refresh_models.setToolTip("Ask the server which models it offers")
        self.refresh_models.clicked.connect(self.load_server_models)
        self.max_concurrency = QSpinBox()
        self.max_concurrency.setRange(1, 64)
        self.max_concurrency.setValue(defaults.max_concurrency)
        self.max_concurrency.setToolTip("Requests sent to the server at once")

        model_row = QHBoxLayout()
        model_row.addWidget(self.model, 1)
        model_row.addWidget(model_browse)
        adapter_row = QHBoxLayout()
        adapter_row.addWidget(self.adapter, 1)
        adapter_row.addWidget(adapter_browse)
        endpoint_row = QHBoxLayout()
        endpoint_row.addWidget(self.endpoint, 1)
        endpoint_row.addWidget(self.refresh_models)
        form = QFormLayout()
        self._form = form
        form.addRow("Runs on", self.backend)
        form.addRow("Server", endpoint_row)
        form.addRow("Requests at once", self.max_concurrency)
        form.addRow("Model", model_row)
        form.addRow("", self.current_note)
        form.addRow("Adapter", adapter_row)
        form.addRow("Write", self.kind)
        form.addRow("Beams", self.num_beams)
        form.addRow("Min new tokens", self.min_tokens)
        form.addRow("Max new tokens", self.max_tokens)
        form.addRow("Preset", self.preset)
        form.addRow("Prompt", self.prompt)
        form.addRow("Repetition penalty", self.repetition)
        form.addRow("Batch size", self.batch_size)
        device_row = QHBoxLayout()  # one row: the dialog must fit a 1024x700 screen
        device_row.addWidget(self.device)
        device_row.addWidget(self.check_views, 1)
        form.addRow("Device", device_row)

        scope_box = QGroupBox("Images")
        self.scope_group = QButtonGroup(self)
        self.scope_selection = QRadioButton(f"Selected images ({selection_count})")
        self.scope_filter = QRadioButton(f"Images in the current view ({filter_count})")
        uncaptioned = f" ({uncaptioned_count})" if uncaptioned_count is not None else ""
        self.scope_uncaptioned = QRadioButton(f"Everything uncaptioned{uncaptioned}")
        scope_layout = QVBoxLayout(scope_box)
        for button, scope in (
            (self.scope_selection, SCOPE_SELECTION),
            (self.scope_filter, SCOPE_FILTER),
            (self.scope_uncaptioned, SCOPE_UNCAPTIONED),
        ):
            button.setProperty("scope", scope)
            self.scope_group.addButton(button)
            scope_layout.addWidget(button)
        self.scope_selection.setEnabled(selection_count > 0)
        self.scope_filter.setEnabled(filter_count > 0)
        (self.scope_selection if selection_count > 1 else self.scope_uncaptioned).setChecked(True)

        restyle_box = self._restyle_choice(restylers)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Start")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.overwrite)
        layout.addWidget(scope_box)
        layout.addWidget(restyle_box)
        note = QLabel("Captions appear in the grid as they are written; you can pause or cancel at any time.")
        note.setWordWrap(True)
        layout.addWidget(note)
        layout.addWidget(buttons)

        self._local_only = [self.adapter, adapter_browse, model_browse, self.check_views, self.num_beams, self.min_tokens,
                            self.repetition, self.device]
        self._server_only = [self.endpoint, self.refresh_models, self.max_concurrency]
        self.backend.currentIndexChanged.connect(self._show_backend)
        self._show_backend()

    def _restyle_choice(self, restylers: list[str]) -> QWidget:
        """"Then restyle with…" on one row: a restyler (this library's restyler versions first, else a
        text model folder, hub id, or on a server its model name) and the style prompt."""
        row = QWidget()
        self.restyle_box = QCheckBox("Then restyle with")
        self.restyle_box.setObjectName("restyleCheck")
        self.restyle_box.setToolTip("A text language model rewrites each new caption in a style; a person's "
                                    "caption is never restyled, and the caption's provenance names both stages.")
        self.restyler = QComboBox()
        self.restyler.setEditable(True)
        self.restyler.addItems(list(restylers))
        self.restyler.setToolTip("A restyler version of this library (train one from your corrected captions), "
                                 "a local text model folder or hub id (e.g. Qwen/Qwen2.5-0.5B-Instruct), or with "
                                 "a model server, the server's model name")
        if not restylers:
            self.restyler.lineEdit().setPlaceholderText("Qwen/Qwen2.5-0.5B-Instruct")
        self.style = QLineEdit()
        self.style.setPlaceholderText("style (default: the restyler's own)")
        self.style.setToolTip("The style instruction, e.g. 'Rewrite as a short, title-case gallery label.' "
                              "Empty: a trained restyler's own style, else a plain house style.")
        for widget in (self.restyler, self.style):
            widget.setEnabled(False)
            self.restyle_box.toggled.connect(widget.setEnabled)
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.restyle_box)
        layout.addWidget(self.restyler, 1)
        layout.addWidget(self.style, 1)
        return row

    def restyle_spec(self) -> RestyleSpec | None:
        """The restyle stage to run after captioning (None: not asked for); the scope is what
        the caption job captioned, set on the model thread.  Runs where captioning runs."""
        if not self.restyle_box.isChecked():
            return None
        server = self.backend.currentData() == "openai"
        return RestyleSpec(
            restyler=self.restyler.currentText().strip(), style=self.style.text().strip() or None,
            backend="openai" if server else "local", endpoint=self.endpoint.text().strip() if server else None,
            device=self.device.currentText(), max_concurrency=self.max_concurrency.value(),
            batch_size=self.batch_size.value())

    def _show_backend(self) -> None:
        server = self.backend.currentData() == "openai"
        for widget in self._server_only:
            widget.setEnabled(server)
        for widget in self._local_only:
            widget.setEnabled(not server)
        self.prompt.setPlaceholderText("describe the photo in one sentence" if server else "model default")

    def load_server_models(self) -> list[str]:
        """Fill the model list from the server (a local server answers at once; 5 s at most)."""
        from core.captioning.errors import ModelLoadError
        from core.captioning.server import list_server_models

        try:
            names = list_server_models(self.endpoint.text().strip())
        except (ModelLoadError, ValueError) as exc:
            QMessageBox.warning(self, "Model server", str(exc))
            return []
        current = self.model.currentText()
        self.model.clear()
        self.model.addItems(names)
        self.model.setCurrentText(current if current in names or not names else names[0])
        return names

    def accept(self) -> None:
        try:
            self.spec()  # a bad endpoint is said here, not when the job starts
            self.restyle_spec()  # and a restyle stage without a restyler
        except ValueError as exc:
            QMessageBox.warning(self, "Caption images", str(exc))
            return
        super().accept()

    def _browse(self, setter, title: str) -> None:
        folder = QFileDialog.getExistingDirectory(self, title, start_folder("models"))
        if folder:
            remember_folder("models", folder)
            setter(folder)

    def scope(self) -> str:
        button = self.scope_group.checkedButton()
        return button.property("scope") if button is not None else SCOPE_UNCAPTIONED

    def generation_settings(self) -> GenerationSettings:
        return GenerationSettings(
            num_beams=self.num_beams.value(),
            min_new_tokens=self.min_tokens.value(),
            max_new_tokens=max(self.max_tokens.value(), self.min_tokens.value(), 1),
            repetition_penalty=round(self.repetition.value(), 3),
        )

    def spec(self) -> CaptionJobSpec:
        """The job the dialog describes; the window sets its scope from :meth:`scope`."""
        server = self.backend.currentData() == "openai"
        adapter = None if server else self.adapter.text().strip() or None
        template = self.prompt.text().strip() or None
        model = self.model.currentText().strip() or DEFAULT_MODEL
        endpoint = self.endpoint.text().strip()
        return self._defaults.with_(
            backend="openai" if server else "local",
            # Kept in the settings for the next time the server is picked, but a local spec has none.
            endpoint=(endpoint or None) if server else None,
            max_concurrency=self.max_concurrency.value(),
            model=str(Path(model).expanduser()) if model.startswith(("~", "/", ".")) else model,
            adapter=adapter,
            generation=self.generation_settings(),
            preset=None if template else self.preset.currentData(),
            prompt_template=template,
            kind=self.kind.currentData(),
            batch_size=self.batch_size.value(),
            device=self.device.currentText(),
            overwrite_model_captions=self.overwrite.isChecked(),
            check_views=(self._defaults.check_views or DIALOG_VIEW_CHECKS) if self.check_views.isChecked() and not server
            else 0,
            scope=None,
        )


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def about_text() -> str:
    """Versions for the About box and bug reports (reads metadata; imports no torch)."""
    rows = [
        ("CaptionDesk", core_version),
        ("Python", platform.python_version()),
        ("Qt", qVersion()),
        ("PySide6", pyside_version),
        ("SQLAlchemy", _version("sqlalchemy")),
        ("SQLite", sqlite3.sqlite_version),
        ("Pillow", _version("pillow")),
        ("PyTorch", _version("torch")),
        ("Transformers", _version("transformers")),
        ("PEFT", _version("peft")),
        ("Platform", platform.platform()),
    ]
    table = "".join(f"<tr><td>{name}</td><td>&nbsp;{value}</td></tr>" for name, value in rows)
    return (
        "<h3>CaptionDesk</h3>"
        "<p>Batch-caption photo libraries with a local image-captioning model, "
        "review and correct the captions, and keep their provenance.</p>"
        f"<table>{table}</table>"
        "<p>License: GPL-3.0-or-later. Uses Qt for Python (LGPL-3.0).</p>"
    )
