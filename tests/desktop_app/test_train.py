"""The Train dialog with a fake training function (the real loop is tested in test_training.py), alone
and on the window's model thread, taking turns with captioning."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from PySide6.QtCore import QThread

from core.captioning.job_spec import CaptionJobSpec
from core.jobs import Progress
from desktop_app.caption_dialog import SCOPE_LIBRARY
from desktop_app.model_thread import ModelJob
from desktop_app.train_dialog import TrainDialog
from tests.support.gui_fakes import FakeEngine, build_library
from tests.support.paths import REPO_ROOT
from tests.support.window_helpers import WAIT, make_window


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


def until_cancelled(name: str = "x", *, started: threading.Event | None = None, steps: int = 0):
    """A training stand-in that runs until cancelled (reporting *steps* steps, if any)."""

    def train(*_args, progress, cancel, **_kwargs):
        if started is not None:
            started.set()
        step = 0
        while not cancel.is_set():
            step += 1
            if steps:
                progress(Progress(step, steps, f"Step {step} of {steps}"))
            time.sleep(0.01)
        return SimpleNamespace(cancelled=True, name=name)

    return train


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


def test_train_dialog_fits_small_screens_and_keeps_its_layout_during_a_run(qtbot, library) -> None:
    from PySide6.QtCore import QSize

    from desktop_app.dialog_kit import WINDOW_FRAME, fit_on_screen

    dialog = TrainDialog(library, base_model="tiny", train_fn=fake_train)
    qtbot.addWidget(dialog)
    for screen in (QSize(1024, 700), QSize(1280, 800)):
        fit_on_screen(dialog, QSize(560, 2000), available=screen)
        dialog.show()
        qtbot.waitExposed(dialog)
        assert dialog.height() + WINDOW_FRAME.height() <= screen.height()
        assert dialog.width() + WINDOW_FRAME.width() <= screen.width()
        for button in (dialog.start_button, dialog.cancel_button):
            bottom = button.mapTo(dialog, button.rect().bottomLeft()).y()
            assert button.isVisible() and bottom < dialog.height()
    dialog.val_ratio.setValue(0.3)
    dialog.set_ready(None)  # the fake run needs no data

    def places():
        return [w.geometry() for w in (dialog.chart, dialog.bar, dialog.status, dialog.table, dialog.verdict,
                                       dialog.start_button, dialog.use_button)]

    before = places()
    dialog.epochs.setValue(2)
    with qtbot.waitSignal(dialog.version_created, timeout=5000):
        dialog.start()
        assert places() == before
    qtbot.wait(10)
    assert "beat the base model" in dialog.verdict.text() and not dialog.use_button.isHidden()
    assert places() == before


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


def test_a_gain_within_the_noise_is_said_and_not_offered(qtbot, library) -> None:
    """A real TrainingResult judged by core's interval rule: one photo better of 30 is no win."""
    from core.training.metrics import caption_metrics, compare_to_base, metric_intervals
    from core.training.trainer import TrainingResult

    refs = [f"a {c} square" for c in ("red", "green", "blue")] * 10
    base_preds = [r if i % 2 else "a square" for i, r in enumerate(refs)]
    preds = [refs[0], *base_preds[1:]]

    def slight_train(library, base, name, config, *, progress, cancel, on_epoch):
        result = TrainingResult(name=name, method="full", best_epoch=1, epochs_run=3,
                                base_metrics=caption_metrics(base_preds, refs), metrics=caption_metrics(preds, refs),
                                notes=["kept epoch 1 of 3: later epochs scored lower on the validation photos"])
        result.intervals["validation"] = {"base": metric_intervals(base_preds, refs),
                                          "trained": metric_intervals(preds, refs)}
        result.comparison["validation"] = compare_to_base(base_preds, preds, refs)
        return result

    dialog = TrainDialog(library, base_model="tiny", train_fn=slight_train)
    qtbot.addWidget(dialog)
    with qtbot.waitSignal(dialog.version_created, timeout=5000):
        dialog.start()
    text = dialog.verdict.text()
    assert "did not beat the base model by more than the noise" in text and "95% interval" in text
    assert "Kept epoch 1 of 3" in text
    assert dialog.use_button.isHidden()
    low, high = dialog.table.item(0, 1).text().split("(")[1].rstrip(")").split("–")
    assert float(low) <= float(dialog.table.item(0, 1).text().split()[0]) <= float(high)


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
    dialog = TrainDialog(library, train_fn=until_cancelled())
    qtbot.addWidget(dialog)
    dialog.start()
    dialog.cancel()
    assert not dialog.cancel_button.isEnabled() and dialog.status.text() == "Stopping after the current batch…"
    qtbot.waitUntil(lambda: "resume" in dialog.status.text(), timeout=5000)
    dialog.family_defaults.setChecked(False)  # the rate is the person's to set
    dialog.auto_lr.setChecked(False)
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
    assert dialog.lora_r.isEnabled() and dialog.config().lora_r == 4 and dialog.config().lr is None  # range test
    dialog.auto_lr.setChecked(False)
    assert dialog.lr.isEnabled() and dialog.config().lr == 1e-4


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


def test_training_and_captioning_take_turns_on_the_windows_model_thread(qtbot, library, photo_dir, settings) -> None:
    """Training runs on the thread that captions, one job at a time: the caption model is
    freed before training loads its own copy, and each job waits for the other."""
    build_library(library, photo_dir, count=40, model_every=0, human_every=2, bad_files=0)  # 20 verified
    engine = FakeEngine(delay=0.05)
    window = make_window(qtbot, library, settings, engine)
    assert not window.actions["release_model"].isEnabled()  # nothing loaded yet: nothing to unload
    assert window.caption_jobs.start_captioning(CaptionJobSpec(model="fake-model", batch_size=2), SCOPE_LIBRARY)
    window.captioning.pause()  # held between batches until the test says: no race with a fast job

    # Opened from the window while captioning runs: Train is off, and the dialog says why.
    window.versions.open_train_dialog()
    dialog = window.versions.train_dialog
    assert dialog is not None
    dialog.val_ratio.setValue(0.3)  # enough photos on both sides: only the running job stands in the way
    assert "Captioning is running" in dialog.not_ready.text()
    assert not dialog.start_button.isEnabled()
    # Once captioning ends, Train comes on by itself (the data is enough).
    with qtbot.waitSignal(window.captioning.finished, timeout=WAIT):
        window.captioning.resume()
    qtbot.waitUntil(dialog.start_button.isEnabled, timeout=WAIT)
    assert dialog.not_ready.text() == ""
    captioner = engine.captioners[-1]
    assert not captioner.closed  # kept loaded for the next caption job, until training needs the memory
    assert window.actions["release_model"].isEnabled()
    # The end of a background job is announced in the status bar, and stays there (no timeout).
    assert window.statusBar().currentMessage().startswith("Captioning finished: 20 captioned")

    release = threading.Event()
    seen = {}

    def blocking_train(library, base, name, config, *, progress, cancel, on_epoch):
        seen["thread"] = QThread.currentThread()
        seen["captioner_closed"] = captioner.closed
        while not release.is_set() and not cancel.is_set():
            time.sleep(0.01)
        return fake_train(library, base, name, config, progress=progress, cancel=cancel, on_epoch=on_epoch)

    dialog._train_fn = blocking_train
    dialog.name.setText("turns")
    dialog.epochs.setValue(2)
    dialog.start()
    qtbot.waitUntil(lambda: "thread" in seen, timeout=WAIT)
    assert seen["thread"] is window.captioning._thread  # the window's model thread, not one of the dialog's
    assert seen["captioner_closed"]
    # Captioning waits for training: the verb is off, and a start is refused with one clear line.
    assert window.captioning.model_job is not None and not window.actions["caption"].isEnabled()
    assert not window.caption_jobs.start_captioning(CaptionJobSpec(model="fake-model"), SCOPE_LIBRARY)
    assert window.log_panel.entries[-1][1] == ("Training “turns” is using the model thread; captioning can start "
                                               "when it has finished.")
    # Greyed out, Caption says why, naming the run (menu and toolbar); Unload has nothing to free.
    reason = "Training “turns” is using the model thread; captioning can start when it has finished."
    assert window.actions["caption"].toolTip() == reason == window.actions["toolbar_caption"].toolTip()
    assert not window.actions["release_model"].isEnabled()
    assert not dialog.start_button.isEnabled()  # this dialog's own run: no second one
    assert dialog.not_ready.text() == ""  # and no "… is using the model thread" about itself
    # Closing the dialog does not stop the run: the main window's status bar shows it,
    # and Show (or Train) brings the same dialog back.
    dialog.close()
    status = window.model_job_status
    assert window.captioning.model_job is not None and release.is_set() is False
    assert not status.isHidden() and status.label.text() == "Training “turns”…"
    status.show_button.click()
    assert dialog.isVisible()
    dialog.reject()  # Escape: the same
    window.versions.open_train_dialog()
    assert window.versions.train_dialog is dialog and dialog.isVisible()

    with qtbot.waitSignal(dialog.version_created, timeout=WAIT):
        release.set()
    assert window.captioning.model_job is None and window.actions["caption"].isEnabled()
    # The end is announced once the job's outcome reaches the window (just after the signal).
    qtbot.waitUntil(lambda: window.statusBar().currentMessage() == "Training “turns”: finished.", timeout=WAIT)
    qtbot.waitUntil(lambda: window.log_panel.entries[-1] == ("info", "Training “turns”: finished."), timeout=WAIT)
    assert reason not in window.actions["caption"].toolTip()
    assert status.isHidden()
    # The model thread captions again, loading its model afresh.
    with qtbot.waitSignal(window.captioning.finished, timeout=WAIT):
        assert window.caption_jobs.start_captioning(CaptionJobSpec(model="fake-model", overwrite_model_captions=True),
                                       SCOPE_LIBRARY)
    assert len(engine.loaded) == 2
    dialog.close()


def test_closing_the_window_stops_a_training_run(qtbot, library, photo_dir, settings) -> None:
    build_library(library, photo_dir, count=24, model_every=0, human_every=1, bad_files=0)
    window = make_window(qtbot, library, settings, FakeEngine())
    stopped = threading.Event()

    def endless_train(*_args, cancel, **_kwargs):
        while not cancel.is_set():
            time.sleep(0.01)
        stopped.set()
        return SimpleNamespace(cancelled=True, name="x")

    dialog = TrainDialog(library, base_model="tiny", train_fn=endless_train, service=window.captioning,
                         parent=window)
    dialog.start()
    qtbot.waitUntil(lambda: window.captioning.model_job is not None, timeout=WAIT)
    window.close()
    assert stopped.is_set()


def test_a_training_run_is_cancelled_from_the_status_bar(qtbot, library, photo_dir, settings) -> None:
    build_library(library, photo_dir, count=24, model_every=0, human_every=1, bad_files=0)
    window = make_window(qtbot, library, settings, FakeEngine())
    window.versions.open_train_dialog()
    dialog = window.versions.train_dialog
    dialog._train_fn = until_cancelled("long", steps=1000)
    dialog.name.setText("long")
    dialog.start()
    status = window.model_job_status
    qtbot.waitUntil(lambda: status.label.text().startswith("Training “long”: Step "), timeout=WAIT)
    assert status.bar.maximum() == 1000 and status.bar.value() > 0
    dialog.close()
    status.cancel_button.click()
    # Both views of the run hear the one cancel: neither offers Cancel again.
    assert status.label.text() == "Stopping training “long”…" and not status.cancel_button.isEnabled()
    assert not dialog.cancel_button.isEnabled() and dialog.status.text() == "Stopping after the current batch…"
    qtbot.waitUntil(status.isHidden, timeout=WAIT)
    assert window.captioning.model_job is None and window.actions["caption"].isEnabled()
    assert dialog.status.text().startswith("Cancelled.")
    # It ended while its dialog was closed: Train brings that dialog back, not a blank one.
    window.versions.open_train_dialog()
    assert window.versions.train_dialog is dialog and dialog.status.text().startswith("Cancelled.")

    # The other way round: Cancel in the dialog, and the status bar says it is stopping.
    dialog.name.setText("long2")
    dialog.start()
    qtbot.waitUntil(lambda: not status.isHidden(), timeout=WAIT)
    dialog.cancel()
    assert status.label.text() == "Stopping training “long2”…" and not status.cancel_button.isEnabled()
    qtbot.waitUntil(status.isHidden, timeout=WAIT)


def test_a_failure_while_the_dialog_is_closed_is_reported_and_kept(qtbot, library, photo_dir, settings) -> None:
    build_library(library, photo_dir, count=24, model_every=0, human_every=1, bad_files=0)
    window = make_window(qtbot, library, settings, FakeEngine())
    go = threading.Event()

    def failing_train(*_args, **_kwargs):
        go.wait(30)
        raise RuntimeError("CUDA out of memory")

    window.versions.open_train_dialog()
    dialog = window.versions.train_dialog
    dialog._train_fn = failing_train
    dialog.start()
    dialog.close()
    with qtbot.waitSignal(window.captioning.state_changed, timeout=WAIT):
        go.set()
    qtbot.waitUntil(lambda: "CUDA out of memory" in dialog.status.text(), timeout=WAIT)
    # Nobody was looking at the dialog: the window reports it (log panel, status bar)...
    assert window.log_panel.entries[-1][:2] == ("error", "Training “my-captioner” failed: CUDA out of memory")
    # ...and Train shows the dialog that holds it.
    window.versions.open_train_dialog()
    assert window.versions.train_dialog is dialog and dialog.isVisible()


def test_the_model_thread_is_not_stuck_when_freeing_the_caption_model_fails(qtbot, library, photo_dir,
                                                                           settings) -> None:
    build_library(library, photo_dir, count=6, model_every=0, human_every=0, bad_files=0)
    engine = FakeEngine()
    window = make_window(qtbot, library, settings, engine)
    with qtbot.waitSignal(window.captioning.finished, timeout=WAIT):
        assert window.caption_jobs.start_captioning(CaptionJobSpec(model="fake-model"), SCOPE_LIBRARY)

    def broken_close():
        raise RuntimeError("CUDA error: device-side assert triggered")

    engine.captioners[-1].close = broken_close
    job = ModelJob("Training “x”", lambda **_callbacks: "never")
    with qtbot.waitSignal(job.failed, timeout=WAIT) as failed:
        assert window.captioning.start_model_job(job)
    assert "device-side assert" in failed.args[0]
    qtbot.waitUntil(lambda: window.captioning.model_job is None, timeout=WAIT)
    assert not window.captioning.busy  # the next job can start


def test_a_standalone_dialog_stops_its_own_run_on_escape(qtbot, library) -> None:
    started = threading.Event()
    dialog = TrainDialog(library, train_fn=until_cancelled(started=started))
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.start()
    assert started.wait(10)
    dialog.reject()  # no close event: its own model thread must still stop
    assert dialog._own_service is None and not dialog.isVisible()


_DETACH_SCRIPT = """
import sys, time
from PySide6.QtCore import QCoreApplication, QEvent
app = QCoreApplication([])
from desktop_app.model_thread import CaptionService, ModelJob, threads_still_running
service = CaptionService()
job = ModelJob("Writing “v” as a standalone model", lambda **_callbacks: time.sleep(2), cancellable=False)
assert service.start_model_job(job)
time.sleep(0.2)
print("stopped in time:", service.shutdown(timeout_ms=200), flush=True)
service.deleteLater()
QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
print("survived; still running:", threads_still_running(), flush=True)
while threads_still_running():
    time.sleep(0.05)
print("done", flush=True)
"""


def test_a_model_job_that_outlives_shutdown_does_not_abort_the_process(tmp_path) -> None:
    """Closing the window waits 10 s for the model thread; a job that cannot stop by then
    (a model still loading, a merge being written) is let go instead of deleting its
    running thread, which makes Qt abort the whole process."""
    import os
    import subprocess
    import sys

    repo = REPO_ROOT
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(repo)}
    done = subprocess.run([sys.executable, "-c", _DETACH_SCRIPT], cwd=repo, env=env, capture_output=True, check=False,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["stopped in time: False", "survived; still running: True", "done"]


def test_another_library_waits_for_the_jobs_on_this_one(qtbot, library, photo_dir, settings, tmp_path) -> None:
    """Opening another library closes this one: not while a job still reads and writes it."""
    build_library(library, photo_dir, count=6, model_every=0, human_every=0, bad_files=0)
    window = make_window(qtbot, library, settings, FakeEngine(delay=0.05))
    assert window.caption_jobs.start_captioning(CaptionJobSpec(model="fake-model", batch_size=1), SCOPE_LIBRARY)
    window.captioning.pause()
    window.libraries.open_library(tmp_path / "other.db")
    assert window.log_panel.entries[-1][1] == ("Captioning is running on this library. Another library can open "
                                               "when it has finished or been cancelled.")
    assert window.library is library and not (tmp_path / "other.db").exists()
    with qtbot.waitSignal(window.captioning.finished, timeout=WAIT):
        window.captioning.cancel()
    with qtbot.waitSignal(window.library_opened, timeout=WAIT):
        window.libraries.open_library(tmp_path / "other.db")
    assert window.library.path == tmp_path / "other.db"


def test_train_dialog_prefills_the_active_versions_base_and_a_user_error_is_one_line(
        qtbot, library, photo_dir, caplog) -> None:
    """After an Activate the dialog pre-fills the version's base (a LoRA version is no base);
    a base the real trainer refuses is one line in the dialog and no traceback in the log."""
    import logging

    from core.models import ModelVersion
    from core.training.versions import set_active

    build_library(library, photo_dir, count=24, model_every=0, human_every=1, bad_files=0)
    with library.db.write() as session:
        session.add(ModelVersion(name="shop-lora", base_model="org/base-model", adapter_path="/adapters/shop",
                                 method="lora", config={"trained_from": "org/base-model"}))
    set_active(library, "shop-lora")
    dialog = TrainDialog(library)
    qtbot.addWidget(dialog)
    assert dialog.base.text() == "org/base-model"
    assert dialog.continue_from.isVisibleTo(dialog) and not dialog.continue_from.isEnabled()

    dialog.base.setText("shop-lora")  # typed by hand: the trainer itself refuses it
    with caplog.at_level(logging.INFO):
        dialog.start()
        qtbot.waitUntil(lambda: not dialog.running, timeout=WAIT)
    assert "is a LoRA version; train from its base model" in dialog.status.text()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not any("Traceback" in r.getMessage() for r in caplog.records)


def test_train_dialog_offers_to_continue_from_an_active_full_version(qtbot, library) -> None:
    from core.models import ModelVersion
    from core.training.versions import set_active

    with library.db.write() as session:
        session.add(ModelVersion(name="shop-full", base_model="/models/shop-full", method="full",
                                 config={"trained_from": "org/base-model"}))
    set_active(library, "shop-full")
    dialog = TrainDialog(library, train_fn=fake_train)
    qtbot.addWidget(dialog)
    assert dialog.base.text() == "org/base-model" and dialog.continue_from.isEnabled()
    dialog.continue_from.setChecked(True)
    assert dialog.base.text() == "shop-full" and not dialog.base.isEnabled()
    dialog.continue_from.setChecked(False)
    assert dialog.base.text() == "org/base-model"


def test_bertscore_and_clipscore_rows_show_the_held_out_values_when_computed(qtbot, library) -> None:
    from desktop_app.train_dialog import METRICS
    from desktop_app.versions_window import COLUMNS, version_row

    def semantic_train(_library, _base, name, config, *, progress, cancel, on_epoch):
        assert (config.bertscore_model, config.clip_model) == ("roberta-large", "openai/clip-vit-base-patch32")
        return SimpleNamespace(cancelled=False, name=name, best_epoch=1, base_metrics={"cider": 1.0},
                               metrics={"cider": 2.0}, base_test_metrics={"bertscore_f1": 0.41, "clipscore": 0.62},
                               test_metrics={"bertscore_f1": 0.57, "clipscore": 0.66})

    dialog = TrainDialog(library, base_model="tiny", train_fn=semantic_train)
    qtbot.addWidget(dialog)
    dialog.semantic.setChecked(True)
    dialog.name.setText("scored")
    with qtbot.waitSignal(dialog.version_created, timeout=5000):
        dialog.start()
    rows = {label: (dialog.table.item(r, 0).text(), dialog.table.item(r, 1).text())
            for r, (_, label) in enumerate(METRICS)}
    assert rows["BERTScore F1"] == ("0.410", "0.570") and rows["CLIPScore"] == ("0.620", "0.660")
    assert rows["CIDEr"] == ("1.000", "2.000") and rows["BLEU-4"] == ("-", "-")
    # The Versions window: the test split's values when stored there, "–" when never computed.
    version = SimpleNamespace(is_active=False, name="v", base_model="b", config={}, method="lora", created_at=None,
                              data_snapshot={}, metrics={"base": {"cider": 1.0}, "trained": {"cider": 2.0},
                                                         "test": {"base": {"bertscore_f1": 0.41},
                                                                  "trained": {"bertscore_f1": 0.57}}})
    row = dict(zip(COLUMNS, version_row(version), strict=True))
    assert row["BERTScore F1"] == "0.410 → 0.570" and row["CLIPScore"] == "–"


def test_train_dialog_shows_the_range_tests_rate_curve_and_note(qtbot, library) -> None:
    """No rate given: the run's range test result (rate, curve, published range) is shown when it ends."""
    from core.captioning.families import get_family
    from core.training.lr_range import LrRangeResult, compare_with_published

    curve = [[10 ** (-7 + 7 * i / 39), 5.0 - 3.0 * i / 30 if i < 30 else 2.0 + (i - 30)] for i in range(40)]
    published, source, inside = compare_with_published(get_family("blip"), "full", 2e-3)
    found = LrRangeResult(lr=2e-3, rule="min/10", steps=40, curve=curve, family="blip", method="full",
                          published=published, published_source=source, inside=inside).to_dict()
    seen = []

    def train(library, base, name, config, **callbacks):
        seen.append(config.lr)
        result = fake_train(library, base, name, config, **callbacks)
        result.lr_range = found if config.lr is None else None
        return result

    dialog = TrainDialog(library, base_model="tiny", train_fn=train)
    qtbot.addWidget(dialog)
    dialog.method.setCurrentText("full")
    assert dialog.auto_lr.isChecked() and not dialog.lr.isEnabled() and dialog.lr_curve.isHidden()
    with qtbot.waitSignal(dialog.version_created, timeout=5000):
        dialog.start()
    assert seen == [None]
    assert not dialog.lr_curve.isHidden()
    text = dialog.lr_curve.label.text()
    assert text.startswith("Learning rate: 2.0e-03 (range test over 40 steps; published range for BLIP full "
                           "fine-tuning is 1e-05–5e-05: outside it"), text
    assert len(dialog.lr_curve.sparkline.points()) == 40
    dialog.lr_curve.sparkline.repaint()
    # A rate set by hand: no range test, nothing to show.
    dialog.auto_lr.setChecked(False)
    with qtbot.waitSignal(dialog.version_created, timeout=5000):
        dialog.start()
    assert seen == [None, 2e-5] and dialog.lr_curve.isHidden()


def test_the_versions_window_shows_the_rate_and_how_it_was_chosen() -> None:
    from desktop_app.versions_window import COLUMNS, learning_rate_cell, learning_rate_tip

    column = COLUMNS.index("Learning rate")
    found = {"lr": 2e-3, "rule": "min/10", "steps": 40, "curve": [], "family": "blip", "method": "lora",
             "published": [1e-4, 5e-4], "published_source": "BLIP", "inside": False}
    version = SimpleNamespace(is_active=False, name="v", base_model="b", method="lora", created_at=None,
                              metrics={}, data_snapshot={}, config={"lr": 2e-3, "lr_range": found})
    from desktop_app.versions_window import version_row

    assert version_row(version)[column] == "2.0e-03 (range test)"
    assert "published range for BLIP LoRA is 1e-04–5e-04: outside it" in learning_rate_tip(version.config)
    assert learning_rate_cell({"lr": 1e-4}) == "1.0e-04" and learning_rate_tip({"lr": 1e-4}) == "Set by hand"


def test_the_kind_choice_counts_verified_values_and_trains_that_kind(qtbot, library, photo_dir) -> None:
    from sqlalchemy import select

    from core.captions import set_human_caption
    from core.models import Image

    build_library(library, photo_dir, count=14, model_every=2, human_every=7, bad_files=0)
    with library.db.write() as session:
        ids = list(session.scalars(select(Image.id).order_by(Image.rel_path)))
        for image_id in ids[:13]:
            set_human_caption(session, image_id, f"alt text {image_id}", kind="alt_text")
    seen: list = []

    def kind_train(library, base, name, config, **callbacks):
        seen.append(config.kind)
        return fake_train(library, base, name, config, **callbacks)

    dialog = TrainDialog(library, base_model="tiny", train_fn=kind_train)
    qtbot.addWidget(dialog)
    items = {dialog.kind.itemData(i): dialog.kind.itemText(i) for i in range(dialog.kind.count())}
    assert dialog.kind.currentData() == "caption" and list(items)[0] == "caption"
    assert items["caption"] == "Caption (2 verified)"
    assert items["alt_text"] == "Alt text (13 verified)" and items["keywords"] == "Keywords (0 verified)"
    assert not dialog.start_button.isEnabled()  # two captions are too few
    dialog.kind.setCurrentIndex(dialog.kind.findData("keywords"))
    assert "at least 8 photos with keywords to learn from; there are 0" in dialog.not_ready.text()
    dialog.val_ratio.setValue(0.4)
    dialog.kind.setCurrentIndex(dialog.kind.findData("alt_text"))
    assert "validation alt_text values" in dialog.data_summary.text()
    assert dialog.start_button.isEnabled(), dialog.not_ready.text()  # 13 alt texts are enough
    dialog.epochs.setValue(2)
    with qtbot.waitSignal(dialog.version_created, timeout=5000):
        dialog.start()
    assert seen == ["alt_text"]
    assert dialog.use_button.isHidden()  # a kind's version is activated for it in Model → Versions
