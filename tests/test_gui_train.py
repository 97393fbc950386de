"""The Train dialog with a fake training function (the real loop is tested in test_training.py)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from core.jobs import Progress
from desktop_app.train_dialog import TrainDialog


def fake_train(library, base, name, config, *, progress, cancel, on_epoch):
    on_epoch({"epoch": 0, "loss": None, "cider": 1.0, "exact_match": 0.0})
    for epoch in range(1, config.epochs + 1):
        if cancel.is_set():
            return SimpleNamespace(cancelled=True, name=name)
        progress(Progress(epoch, config.epochs, f"Epoch {epoch}"))
        on_epoch({"epoch": epoch, "loss": 1.0 / epoch, "cider": 2.0 * epoch, "exact_match": 0.2 * epoch})
    base_metrics = {"exact_match": 0.0, "cider": 1.0, "bleu4": 0.1, "rouge_l": 0.3, "edit_rate": 0.8}
    metrics = {"exact_match": 0.9, "cider": 8.0, "bleu4": 0.7, "rouge_l": 0.9, "edit_rate": 0.1}
    return SimpleNamespace(cancelled=False, name=name, base_metrics=base_metrics, metrics=metrics, best_epoch=3)


def test_train_dialog_runs_and_fills_the_table(qtbot, library) -> None:
    dialog = TrainDialog(library, base_model="tiny", train_fn=fake_train)
    qtbot.addWidget(dialog)
    assert "0 training and 0 validation" in dialog.data_summary.text()
    # Too little data: Train is off and the dialog says why, in plain words.
    assert not dialog.start_button.isEnabled()
    assert "at least 8 captioned photos" in dialog.not_ready.text()
    width = dialog.width()
    dialog.method.setCurrentText("full")
    assert not dialog.lora_r.isEnabled() and dialog.lr.value() == 2e-5
    dialog.epochs.setValue(3)
    dialog.name.setText("mine")
    with qtbot.waitSignal(dialog.version_created, timeout=5000) as blocker:
        dialog.start()
    assert blocker.args == ["mine"]
    assert dialog.table.item(0, 0).text() == "0.000" and dialog.table.item(0, 1).text() == "0.900"
    assert [r["epoch"] for r in dialog.chart.records] == [0, 1, 2, 3]
    loss, cider = dialog.chart.series()
    assert loss[0] == (1, 1.0) and cider[-1] == (3, 6.0)
    assert dialog.chart.scale_top(cider) == 6.0 and dialog.chart.scale_top(loss) == 1.0  # own scale each
    dialog.chart.repaint()
    assert not dialog.cancel_button.isEnabled()
    assert dialog.width() == width
    assert "beat the base model" in dialog.verdict.text()
    assert not dialog.use_button.isHidden()
    with qtbot.waitSignal(dialog.use_requested) as used:
        dialog.use_button.click()
    assert used.args == ["mine"]


def test_no_improvement_is_said_and_not_offered(qtbot, library) -> None:
    def same_train(library, base, name, config, *, progress, cancel, on_epoch):
        metrics = {"exact_match": 0.1, "cider": 0.5, "bleu4": 0.1, "rouge_l": 0.3, "edit_rate": 0.8}
        return SimpleNamespace(cancelled=False, name=name, base_metrics=dict(metrics), metrics=metrics,
                               best_epoch=1)

    dialog = TrainDialog(library, base_model="tiny", train_fn=same_train)
    qtbot.addWidget(dialog)
    dialog.show()
    width = dialog.width()
    with qtbot.waitSignal(dialog.version_created, timeout=5000):
        dialog.start()
    assert "nothing improved" in dialog.verdict.text()
    assert dialog.use_button.isHidden()
    assert dialog.width() == width
    # Every metric row is visible: no scrollbar, the table is as tall as its rows.
    assert dialog.table.verticalScrollBar().maximum() == 0


def test_not_ready_reasons_and_plain_errors() -> None:
    from desktop_app.train_dialog import not_ready_reason, plain_error

    assert "there are 0" in not_ready_reason(10, 0)
    assert "validation share" in not_ready_reason(10, 0)
    assert not_ready_reason(10, 2) is None
    assert "--val-ratio" not in plain_error("write more captions, or raise --val-ratio")
    from core.training.data import TrainingData

    try:
        TrainingData([], [], val_ratio=0.1, include_imports=False).require()
    except ValueError as exc:
        shown = plain_error(str(exc))
    assert "--" not in shown and "File → Import captions" in shown, shown


def test_train_dialog_cancel_and_bad_settings(qtbot, library) -> None:
    def slow_train(*args, cancel, **kwargs):
        while not cancel.is_set():
            time.sleep(0.01)
        return SimpleNamespace(cancelled=True, name="x")

    dialog = TrainDialog(library, train_fn=slow_train)
    qtbot.addWidget(dialog)
    dialog.start()
    dialog.cancel()
    qtbot.waitUntil(lambda: not dialog.cancel_button.isEnabled(), timeout=5000)
    assert "resume" in dialog.status.text()
    dialog.family_defaults.setChecked(False)  # the rate is the person's to set
    dialog.lr.setMinimum(0.0)
    dialog.lr.setValue(0.0)
    dialog.start()
    assert "lr must be" in dialog.status.text()


def test_train_dialog_uses_the_family_lora_defaults_unless_asked(qtbot, library) -> None:
    dialog = TrainDialog(library, base_model="tiny", train_fn=fake_train)
    qtbot.addWidget(dialog)
    assert dialog.family_defaults.isChecked() and not dialog.lora_r.isEnabled() and not dialog.lr.isEnabled()
    config = dialog.config()
    assert (config.lora_r, config.lora_alpha, config.lora_dropout, config.lr) == (None, None, None, None)
    dialog.family_defaults.setChecked(False)
    dialog.lora_r.setValue(4)
    assert dialog.lora_r.isEnabled() and dialog.config().lora_r == 4 and dialog.config().lr == 1e-4


def test_train_dialog_shows_the_settings_measured_for_the_base_models_family(qtbot, library, tmp_path) -> None:
    """A BLIP base model (read from its config.json, nothing loaded) shows BLIP's measured LoRA settings."""
    from core.captioning.families import get_family

    folder = tmp_path / "my-blip"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "blip"}', encoding="utf-8")
    blip = get_family("blip").lora_defaults
    dialog = TrainDialog(library, base_model=str(folder), train_fn=fake_train)
    qtbot.addWidget(dialog)
    assert (dialog.lora_r.value(), dialog.lr.value()) == (blip["r"], blip["lr"])
    assert "blip family" in dialog.family_defaults.toolTip()
    dialog.base.setText("no/such-model")
    dialog.base.editingFinished.emit()
    assert dialog.lora_r.text() == "auto" and dialog.lr.text() == "auto"  # family known once it loads
    assert dialog.config().lora_r is None and dialog.config().lr is None
    dialog.family_defaults.setChecked(False)  # by hand: the general defaults to start from, not "auto"
    assert (dialog.lora_r.value(), dialog.lr.value(), dialog.lora_r.text()) == (8, 1e-4, "8")
    dialog.family_defaults.setChecked(True)
    dialog.method.setCurrentText("full")
    dialog.method.setCurrentText("lora")  # back to LoRA: the measured rate again, not a fixed one
    dialog.base.setText(str(folder))
    dialog.base.editingFinished.emit()
    assert dialog.lr.value() == blip["lr"]
