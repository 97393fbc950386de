"""The window's shell: first run, drag and drop, toolbar, geometry, job feedback (offscreen)."""

from __future__ import annotations

import os
import sys

import pytest
from PySide6.QtCore import QMimeData, QPointF, QSettings, QSize, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QApplication

from desktop_app.app_settings import AppSettings
from desktop_app.controllers.caption_jobs import progress_text
from desktop_app.jobs_widget import JobClock, JobStatusWidget, plural
from desktop_app.main_window import PREFERRED_SIZE, MainWindow, fit_to_screen
from tests.support.imagegen import write_jpeg


@pytest.fixture
def shell_settings(tmp_path):
    return AppSettings(QSettings(str(tmp_path / "shell-settings.ini"), QSettings.Format.IniFormat))


@pytest.fixture
def window(qtbot, library, shell_settings):
    win = MainWindow(shell_settings, error_dialogs=False)
    qtbot.addWidget(win)
    win.show()
    with qtbot.waitSignal(win.sidebar_refreshed, timeout=10_000):
        win.libraries.set_library(library)
    yield win
    win.close()


def test_empty_state_shows_on_an_empty_library_and_hides_after_adding(qtbot, window, photo_dir):
    assert window.empty_state_visible
    assert window.empty_page.add_button.text() == "Add a folder…"
    write_jpeg(photo_dir / "a.jpg")
    with qtbot.waitSignal(window.scan_finished, timeout=30_000):
        window.libraries.add_folder(photo_dir)
    qtbot.waitUntil(lambda: not window.empty_state_visible, timeout=10_000)
    # The scan found one uncaptioned photo: the banner offers to caption it.
    qtbot.waitUntil(window.banner.isVisible, timeout=10_000)
    assert window.banner.label.text() == "1 photo has no caption yet."


def test_dropping_a_folder_url_adds_it(qtbot, window, photo_dir, tmp_path):
    for i in range(3):
        write_jpeg(photo_dir / f"p{i}.jpg", seed=i)
    a_file = write_jpeg(tmp_path / "loose.jpg")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(photo_dir)), QUrl.fromLocalFile(str(a_file)), QUrl("https://example.com/x")])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(window.scan_finished, timeout=30_000):
        window.dropEvent(event)
    assert event.isAccepted()
    assert [root.path for root in window.library.roots()] == [str(photo_dir.resolve())]
    qtbot.waitUntil(lambda: window.model.rowCount() == 3, timeout=10_000)
    # The uncaptioned count runs on a worker after the scan; the grid can fill first.
    qtbot.waitUntil(window.banner.isVisible, timeout=10_000)
    assert window.banner.label.text() == "3 photos have no caption yet."


def test_toolbar_has_the_labelled_main_verbs(window):
    labels = [a.text() for a in window.toolbar.actions()]
    assert labels == ["Add folder", "Caption", "Review", "Export", "Train"]


def test_default_geometry_fits_the_available_screen(qtbot, shell_settings):
    small = fit_to_screen(PREFERRED_SIZE, QSize(1280, 800))
    assert small.width() <= 1280 and small.height() <= 800
    assert fit_to_screen(PREFERRED_SIZE, QSize(3840, 2160)) == PREFERRED_SIZE
    win = MainWindow(shell_settings, error_dialogs=False)
    qtbot.addWidget(win)
    available = (win.screen() or QApplication.primaryScreen()).availableGeometry()
    assert win.width() <= available.width() and win.height() <= available.height()


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_paused_time_is_excluded_from_speed_and_eta():
    clock = FakeClock()
    meter = JobClock(clock)
    assert meter.update(0, 100) == (None, None)  # the first report starts the clock
    clock.now += 10
    rate, eta = meter.update(20, 100)
    assert rate == pytest.approx(2.0) and eta == pytest.approx(40.0)
    meter.pause()
    clock.now += 60  # a long pause
    assert meter.update(20, 100) == pytest.approx((2.0, 40.0))
    meter.resume()
    clock.now += 5
    rate, eta = meter.update(30, 100)
    assert rate == pytest.approx(30 / 15) and eta == pytest.approx(70 / 2.0)


def test_model_load_before_the_first_report_does_not_count():
    clock = FakeClock()
    meter = JobClock(clock)
    clock.now += 11  # loading the model: no report yet
    meter.update(0, 50)
    clock.now += 4
    assert meter.update(8, 50)[0] == pytest.approx(2.0)


def test_cancel_state_persists_until_the_job_stops(qtbot):
    widget = JobStatusWidget("test", pausable=True)
    qtbot.addWidget(widget)
    widget.begin("Starting…")
    widget.mark_cancelling("Cancelling after the current batch…")
    widget.update_progress("Captioning 10 / 100", 10, 100)
    assert widget.label.text() == "Cancelling after the current batch…"
    assert widget.bar.value() == 10 and not widget.cancel_button.isEnabled()
    widget.set_stage("Loading model…")
    assert widget.label.text() == "Cancelling after the current batch…"
    widget.end()
    widget.begin("Starting again…")
    widget.update_progress("Captioning 1 / 5", 1, 5)
    assert widget.label.text() == "Captioning 1 / 5" and widget.cancel_button.isEnabled()


def test_plurals_and_first_batch_text():
    assert plural(1, "error") == "1 error"
    assert plural(0, "error") == "0 errors"
    assert plural(2_500, "image") == "2500 images"
    assert progress_text(0, 241, None, None, 0) == "Captioning the first batch of 241 images…"
    assert progress_text(10, 241, 2.5, 92.4, 1) == "Captioning 10 / 241 · 2.5 img/s · ETA 1 min 32 s · 1 error"


def test_failures_show_as_a_link_to_the_log(window):
    window.caption_jobs.set_failed_count(2)
    assert window.failures_label.isVisible()
    assert "2 images failed" in window.failures_label.text()
    window.failures_label.linkActivated.emit("#log")
    assert window.log_dock.isVisible()
    window.caption_jobs.set_failed_count(0)
    assert not window.failures_label.isVisible()


def test_the_window_keeps_tqdm_bars_off_the_terminal(monkeypatch):
    from desktop_app.app import tune_interpreter

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    before = sys.getswitchinterval()
    tune_interpreter()
    sys.setswitchinterval(before)
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
