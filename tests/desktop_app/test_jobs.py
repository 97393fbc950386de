"""Background work in the window: captioning on the inference thread, scanning, start-up."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import fields

import pytest
from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtWidgets import QApplication
from sqlalchemy import select

from core.captioning.job_spec import CaptionJobSpec, GenerationSettings
from core.models import Caption
from desktop_app.app_settings import AppSettings
from desktop_app.caption_dialog import (
    SCOPE_FILTER,
    SCOPE_SELECTION,
    SCOPE_UNCAPTIONED,
    about_text,
)
from desktop_app.main_window import MainWindow
from desktop_app.model_thread import PauseToken
from tests.support.gui_fakes import FakeEngine, build_library
from tests.support.imagegen import write_jpeg
from tests.support.window_helpers import WAIT, make_window, uncaptioned_ids


def model_captioned_ids(library) -> set[int]:
    with library.db.read() as session:
        return set(session.scalars(select(Caption.image_id).where(Caption.source == "model")))


def test_captioning_end_to_end_updates_grid_in_batches(qtbot, library, photo_dir, settings):
    build_library(library, photo_dir, count=24, model_every=3, human_every=0, bad_files=1)
    engine = FakeEngine(delay=0.01)
    window = make_window(qtbot, library, settings, engine)
    todo = uncaptioned_ids(window)
    assert len(todo) == 16
    landed: list[list[int]] = []
    window.captioning.captions_landed.connect(landed.append)
    progress = []
    window.captioning.progress.connect(progress.append)
    request = CaptionJobSpec(model="fake-model", generation=GenerationSettings(max_new_tokens=20), batch_size=4)
    with qtbot.waitSignal(window.captioning.finished, timeout=WAIT) as finished:
        assert window.caption_jobs.start_captioning(request, SCOPE_UNCAPTIONED)
        assert window.caption_status.isVisible()
        assert not window.actions["caption"].isEnabled()  # one job at a time
    stats = finished.args[0]
    assert (stats.captioned, stats.cancelled) == (16, False)
    # Every captioned image reached the grid, in coalesced batches (not one per image).
    assert {i for batch in landed for i in batch} == todo
    assert len(landed) <= 4
    assert uncaptioned_ids(window) == set()  # rows updated in place, no re-query needed
    row = window.model.row_data(window.model.row_of(next(iter(todo))))
    assert row.state == "model" and row.caption.startswith("a photo ") and row.score == -0.5
    assert progress and progress[-1].done == progress[-1].total
    assert not window.caption_status.isVisible()
    assert window.actions["caption"].isEnabled()
    assert [entry for entry in window.log_panel.entries if entry[0] == "error"] == []
    # The generation settings and model are stored as defaults for the next job.
    assert settings.caption_spec() == request  # the scope is not kept: the dialog asks

    # A second job with the same model reuses the loaded captioner.
    window.image_review.go_to_row(0)
    window.grid.selectAll()
    with qtbot.waitSignal(window.captioning.finished, timeout=WAIT):
        window.caption_jobs.start_captioning(
            CaptionJobSpec(model="fake-model", batch_size=8, overwrite_model_captions=True), SCOPE_SELECTION
        )
    assert len(engine.loaded) == 1


@pytest.mark.slow
def test_cancel_mid_run_keeps_everything_committed(qtbot, library, photo_dir, settings):
    build_library(library, photo_dir, count=30, model_every=0, human_every=0, bad_files=0)
    engine = FakeEngine(delay=0.15)
    window = make_window(qtbot, library, settings, engine)
    landed: list[int] = []
    window.captioning.captions_landed.connect(landed.extend)
    request = CaptionJobSpec(model="fake-model", batch_size=2)
    assert window.caption_jobs.start_captioning(request, SCOPE_FILTER)
    qtbot.waitUntil(lambda: len(landed) >= 2, timeout=WAIT)

    # Pause: no batch lands while paused, and the status bar's job row does not move.
    status = window.caption_status
    window.resize(1024, 700)
    qtbot.waitUntil(lambda: window.width() == 1024, timeout=WAIT)
    qtbot.wait(50)
    parts = (status.label, status.bar, status.pause_button, status.cancel_button)
    running = [w.geometry() for w in parts]
    window.caption_jobs.toggle_pause()
    assert window.captioning.paused
    qtbot.wait(50)
    assert status.pause_button.text() == "Resume" and "paused" in status.label.text()
    assert [w.geometry() for w in parts] == running and status.geometry().right() <= window.width()
    time.sleep(0.35)  # at most the batch in flight finishes
    qtbot.wait(120)
    count_paused = len(model_captioned_ids(library))
    qtbot.wait(400)
    assert len(model_captioned_ids(library)) == count_paused
    window.caption_jobs.toggle_pause()
    assert not window.captioning.paused

    with qtbot.waitSignal(window.captioning.finished, timeout=WAIT) as finished:
        window.caption_jobs.cancel_captioning()
    stats = finished.args[0]
    assert stats.cancelled
    in_db = model_captioned_ids(library)
    assert 0 < len(in_db) < 30
    # Nothing lost: everything committed was reported to the grid, and shows there.
    assert set(landed) == in_db
    assert all(window.model.row_data(window.model.row_of(i)).state == "model" for i in in_db)
    assert stats.captioned == len(in_db)


def test_model_load_failure_is_reported_not_raised(qtbot, library, photo_dir, settings):
    build_library(library, photo_dir, count=4, bad_files=0)

    class BrokenEngine(FakeEngine):
        def load_captioner(self, model, adapter=None, device="auto", **_kw):
            raise RuntimeError("no such model: missing/model")

    window = make_window(qtbot, library, settings, BrokenEngine())
    with qtbot.waitSignal(window.captioning.failed, timeout=WAIT):
        window.caption_jobs.start_captioning(CaptionJobSpec(model="missing/model"), SCOPE_UNCAPTIONED)
    errors = [message for level, message in window.log_panel.entries if level == "error"]
    assert errors and "no such model" in errors[-1]
    assert not window.captioning.running and window.actions["caption"].isEnabled()


def test_pause_token_blocks_until_resumed_or_cancelled():
    import threading

    token = PauseToken()
    assert token.is_set() is False
    token.pause()
    started = time.monotonic()
    threading.Timer(0.2, token.resume).start()
    assert token.is_set() is False
    assert time.monotonic() - started >= 0.15
    token.pause()
    threading.Timer(0.1, token.cancel).start()
    assert token.is_set() is True


def test_background_scan_adds_folder_and_shows_images(qtbot, library, tmp_path, settings):
    window = make_window(qtbot, library, settings, FakeEngine())
    assert window.model.rowCount() == 0
    folder = tmp_path / "new photos"
    for k in range(12):
        write_jpeg(folder / f"sub{k % 3}" / f"p{k:02d}.jpg", seed=k)
    with qtbot.waitSignal(window.scan_finished, timeout=WAIT) as done:
        root_id = window.libraries.add_folder(folder)
    assert root_id is not None and done.args[0].new == 12
    qtbot.waitUntil(lambda: window.model.rowCount() == 12, timeout=WAIT)
    qtbot.waitUntil(lambda: window.sidebar.location() == (root_id, None), timeout=WAIT)
    # Adding a folder inside it is refused with a message, not an exception.
    assert window.libraries.add_folder(folder / "sub1") is None
    assert "already in the library" in window.log_panel.entries[-1][1]
    window.libraries.remove_root(root_id, confirm=False)
    qtbot.waitUntil(lambda: window.model.rowCount() == 0, timeout=WAIT)


def test_settings_persist_layout_and_thumbnail_size(qtbot, library, settings):
    window = make_window(qtbot, library, settings, FakeEngine())
    window.set_thumbnail_size(200)
    window.resize(1111, 777)
    window.close()  # saves the layout
    assert settings.geometry() is not None
    again = make_window(qtbot, library, settings, FakeEngine(), size=None)
    assert again.thumbs.display_size == 200
    # The offscreen screen is small, so the width is clamped to fit; the height shows
    # the saved geometry was restored (the default is 900).
    assert abs(again.size().height() - 777) <= 8
    assert "PySide6" in about_text() and "SQLite" in about_text()


def test_main_opens_window_and_library(qtbot, tmp_path, monkeypatch):
    """``main([--library, FOLDER])``: window first, library opened and folder scanned in the background."""
    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path / "cfg"))
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "cfg"))
    folder = tmp_path / "pics"
    for k in range(3):
        write_jpeg(folder / f"a{k}.jpg", seed=k)
    from desktop_app import app

    seen = {}

    def check():
        windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        if windows and windows[0].model.rowCount() == 3:
            seen["rows"] = 3
            seen["title"] = windows[0].windowTitle()
            windows[0].close()
        elif time.monotonic() - started < 20:
            QTimer.singleShot(50, check)
        else:
            for w in windows:
                w.close()

    started = time.monotonic()
    QTimer.singleShot(50, check)
    assert app.main(["--library", str(tmp_path / "lib.db"), str(folder)]) == 0
    assert seen.get("rows") == 3 and "lib.db" in seen["title"]


def test_caption_dialog_builds_the_spec(qtbot):
    from desktop_app.caption_dialog import CaptionDialog

    defaults = CaptionJobSpec(
        model="my/model", generation=GenerationSettings(num_beams=3, max_new_tokens=40), batch_size=4, optimize="none"
    )
    dialog = CaptionDialog(
        defaults=defaults,
        known_models=["other/model"],
        selection_count=0,
        filter_count=12,
        uncaptioned_count=7,
    )
    qtbot.addWidget(dialog)
    from desktop_app.dialog_kit import WINDOW_FRAME

    hint = dialog.sizeHint().expandedTo(dialog.minimumSizeHint())  # it fits a 1024x700 screen, frame included
    assert hint.width() + WINDOW_FRAME.width() <= 1024 and hint.height() + WINDOW_FRAME.height() <= 700, hint
    assert not dialog.scope_selection.isEnabled()  # nothing selected
    assert dialog.scope() == SCOPE_UNCAPTIONED and "(7)" in dialog.scope_uncaptioned.text()
    assert dialog.spec() == defaults  # untouched, the dialog gives back what it was given
    dialog.adapter.setText("/adapters/mine")
    dialog.prompt.setText("a photography of")
    dialog.min_tokens.setValue(50)  # max follows: never below min
    dialog.scope_filter.setChecked(True)
    spec = dialog.spec()
    assert (spec.model, spec.adapter, spec.batch_size, spec.optimize) == ("my/model", "/adapters/mine", 4, "none")
    assert spec.generation.num_beams == 3 and spec.prompt_template == "a photography of"
    assert spec.generation.max_new_tokens >= spec.generation.min_new_tokens == 50
    assert dialog.scope() == SCOPE_FILTER
    # The Confidence box: views checked for a local model, never for a server (no token scores).
    assert spec.check_views == 0 and dialog.check_views.isEnabled()
    qtbot.mouseClick(dialog.check_views, Qt.MouseButton.LeftButton)
    assert dialog.spec().check_views == 2
    dialog.backend.setCurrentIndex(dialog.backend.findData("openai"))
    dialog.endpoint.setText("http://localhost:11434/v1")
    assert not dialog.check_views.isEnabled() and dialog.spec().check_views == 0

def test_caption_dialog_current_model_note_keeps_the_version_name_readable(qtbot):
    from core.training.current import CurrentModel
    from desktop_app.caption_dialog import CaptionDialog

    current = CurrentModel(model="shop-v2", base_model="/models/Salesforce-blip-image-captioning-large",
                           version="shop-v2", version_id=1, source="version")
    dialog = CaptionDialog(defaults=CaptionJobSpec(model="shop-v2"), known_models=[], selection_count=0,
                           filter_count=0, uncaptioned_count=0, versions=["shop-v2"], current=current)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    shown = dialog.current_note.shown_text()
    assert shown != dialog.current_note.full_text()  # too long for the row, so it is cut...
    assert shown.startswith("Current model: version 'shop-v2' (active)")  # ...at its end



def test_caption_spec_round_trips_through_settings(settings):
    assert settings.caption_spec() == CaptionJobSpec()  # nothing kept yet: the defaults
    spec = CaptionJobSpec(
        model="my/model", adapter="/adapters/mine", batch_size=3, device="cpu", optimize="none",
        overwrite_model_captions=True,
        generation=GenerationSettings(num_beams=2, min_new_tokens=4, max_new_tokens=9, prompt="a photo of",
                                    repetition_penalty=1.3),
        scope=(1, 2, 3),
    )
    settings.set_caption_spec(spec)
    settings.sync()
    reread = AppSettings(QSettings(settings.q.fileName(), QSettings.Format.IniFormat))
    assert reread.caption_spec() == spec.with_(scope=None)  # a selection is not a preference
    # Every field of the spec is kept, by its own name (no hand-written parallel dict).
    kept = json.loads(reread.q.value("captioning/defaults"))
    assert set(kept) == {f.name for f in fields(CaptionJobSpec)} - {"scope"}
    # What versions before the spec wrote still reads; what no longer reads gives defaults.
    reread.q.setValue("captioning/defaults", json.dumps({"model": "old/model", "overwrite": True}))
    assert reread.caption_spec() == CaptionJobSpec(model="old/model", overwrite_model_captions=True)
    old_generation = {**spec.to_dict(), "settings": spec.to_dict()["generation"]}
    del old_generation["generation"]
    reread.q.setValue("captioning/defaults", json.dumps(old_generation))
    assert reread.caption_spec() == spec.with_(scope=None)
    reread.q.setValue("captioning/defaults", json.dumps({"model": "m", "batch_size": 0}))
    assert reread.caption_spec() == CaptionJobSpec()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_worker_threads_run_below_the_gui_thread(qtbot) -> None:
    """Pool work and job threads yield the CPU to the GUI thread (per-thread niceness)."""
    from PySide6.QtCore import QThreadPool

    from desktop_app.background import JOB_NICENESS, POOL_NICENESS
    from desktop_app.operations import run_in_pool

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    gui = niceness()
    pool = QThreadPool()
    results: list[int] = []
    run_in_pool(pool, niceness, results.append)
    qtbot.waitUntil(lambda: bool(results), timeout=WAIT)
    job_pool = QThreadPool()
    job_pool.setMaxThreadCount(1)
    run_in_pool(job_pool, niceness, results.append, niceness=JOB_NICENESS)
    qtbot.waitUntil(lambda: len(results) == 2, timeout=WAIT)
    assert results == [min(19, gui + POOL_NICENESS), min(19, gui + JOB_NICENESS)]
    assert niceness() == gui  # the GUI thread itself is untouched
    pool.waitForDone()
    job_pool.waitForDone()


def test_model_load_errors_tell_a_gui_user_what_to_do_in_the_window():
    from core.captioning.errors import ModelLoadError
    from desktop_app.controllers.caption_jobs import gui_wording

    message = gui_wording(str(ModelLoadError.not_downloaded("Salesforce/blip-image-captioning-base")))
    assert "--model" not in message
    assert "choose it in Caption images… → Model → Folder… (the folder that contains it: the one with config.json" \
        in message and message.endswith("e.g. the folder blip-image-captioning-base.")
