"""The list view with columns, and the folder, sort, selection and layout restored on start.

pytest-qt, offscreen, a real temporary library; the fake captioner.
"""

from __future__ import annotations

import pytest
from PySide6.QtCore import QItemSelectionModel, QSettings
from PySide6.QtWidgets import QListView

from desktop_app.app_settings import AppSettings
from desktop_app.list_view import COLUMNS
from tests.support.gui_fakes import FakeEngine, build_library
from tests.support.window_helpers import make_window

WAIT = 10_000


@pytest.fixture
def sample(library, photo_dir):
    info = build_library(library, photo_dir, count=14, model_every=1, human_every=5, bad_files=0)
    return library, info


def open_window(qtbot, library, settings):
    win = make_window(qtbot, library, settings, FakeEngine(), size=(1280, 800))
    qtbot.waitExposed(win)
    qtbot.waitUntil(lambda: win.image_review.current_image_id() is not None, timeout=WAIT)
    return win


def test_list_view_shows_one_photo_a_row_with_sortable_columns(qtbot, sample, settings):
    library, _info = sample
    win = open_window(qtbot, library, settings)
    win.actions["list_view"].trigger()
    assert win.list_view_on and win.grid.viewMode() == QListView.ViewMode.ListMode
    assert win.list_mode.header.isVisible()
    first, second = (win.grid.visualRect(win.model.index(r, 0)) for r in (0, 1))
    assert second.top() >= first.bottom() and second.left() == first.left()  # rows, not cells
    assert first.width() >= win.grid.viewport().width() - 2
    confidence = next(n for n, c in enumerate(COLUMNS) if c[0] == "confidence")
    with qtbot.waitSignal(win.ids_loaded, timeout=WAIT):
        win.list_mode.header.sectionClicked.emit(confidence)
    assert win.filter_bar.sort.currentData() == "confidence"
    # The verbs work on the list's selection as on the grid's.
    win.grid.selectionModel().select(win.model.index(2, 0), QItemSelectionModel.SelectionFlag.Select)
    assert len(win.image_review.selected_ids()) == 2
    win.actions["list_view"].trigger()
    assert win.grid.viewMode() == QListView.ViewMode.IconMode and not win.list_mode.header.isVisible()
    win.shutdown()


def test_folder_sort_selection_and_list_view_come_back_on_start(qtbot, sample, tmp_path):
    library, _info = sample
    ini = str(tmp_path / "restart.ini")
    win = open_window(qtbot, library, AppSettings(QSettings(ini, QSettings.Format.IniFormat)))
    with qtbot.waitSignal(win.sidebar_refreshed, timeout=WAIT, raising=False):
        pass
    root_id = win.model.row_data(0).root_id
    with qtbot.waitSignal(win.ids_loaded, timeout=WAIT):
        assert win.sidebar.select((root_id, "beach/"))
    with qtbot.waitSignal(win.ids_loaded, timeout=WAIT):
        win.filter_bar.sort.setCurrentIndex(win.filter_bar.sort.findData("confidence"))
    win.image_review.go_to_row(3)
    selection = win.grid.selectionModel()
    selection.select(win.model.index(5, 0), QItemSelectionModel.SelectionFlag.Select)
    chosen = sorted(win.image_review.selected_ids())
    current_id = win.image_review.current_image_id()
    win.set_list_view(True)
    win.close()

    again = open_window(qtbot, library, AppSettings(QSettings(ini, QSettings.Format.IniFormat)))
    qtbot.waitUntil(lambda: sorted(again.image_review.selected_ids()) == chosen, timeout=WAIT)
    assert again.sidebar.location() == (root_id, "beach/")
    assert again.filter_bar.sort.currentData() == "confidence"
    assert again.image_review.current_image_id() == current_id
    assert again.list_view_on
    again.shutdown()


def test_a_different_library_starts_fresh(qtbot, sample, settings, tmp_path):
    library, _info = sample
    settings.save_view_state({"library": str(tmp_path / "other.db"), "location": [1, "beach/"],
                              "sort": "confidence", "current": 1, "selected": [1, 2]})
    win = open_window(qtbot, library, settings)
    assert win.filter_bar.sort.currentData() == "name"
    assert win.sidebar.location() == (None, None)
    win.shutdown()
