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
    assert loss[0] == (1, 1.0) and cider[-1] == (3, 0.6)
    dialog.chart.repaint()
    assert dialog.start_button.isEnabled() and not dialog.cancel_button.isEnabled()


def test_train_dialog_cancel_and_bad_settings(qtbot, library) -> None:
    def slow_train(*args, cancel, **kwargs):
        while not cancel.is_set():
            time.sleep(0.01)
        return SimpleNamespace(cancelled=True, name="x")

    dialog = TrainDialog(library, train_fn=slow_train)
    qtbot.addWidget(dialog)
    dialog.start()
    dialog.cancel()
    qtbot.waitUntil(lambda: dialog.start_button.isEnabled(), timeout=5000)
    assert "resume" in dialog.status.text()
    dialog.family_defaults.setChecked(False)  # the rate is the person's to set
    dialog.lr.setMinimum(0.0)
    dialog.lr.setValue(0.0)
    dialog.start()
    assert "lr must be" in dialog.status.text() and dialog.start_button.isEnabled()


def test_train_dialog_uses_the_family_lora_defaults_unless_asked(qtbot, library) -> None:
    dialog = TrainDialog(library, base_model="tiny", train_fn=fake_train)
    qtbot.addWidget(dialog)
    assert dialog.family_defaults.isChecked() and not dialog.lora_r.isEnabled() and not dialog.lr.isEnabled()
    config = dialog.config()
    assert (config.lora_r, config.lora_alpha, config.lora_dropout, config.lr) == (None, None, None, None)
    dialog.family_defaults.setChecked(False)
    dialog.lora_r.setValue(4)
    assert dialog.lora_r.isEnabled() and dialog.config().lora_r == 4 and dialog.config().lr == 1e-4
