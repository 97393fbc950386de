"""The loupe (double-click or Space: the photo large, fit or 100 %, next/previous with the
caption editable beside it) and the two-photo comparison.

pytest-qt, offscreen, a real temporary library with photos bigger than the screen's share.
"""

from __future__ import annotations

import pytest
from PySide6.QtCore import QItemSelectionModel, Qt

from tests.support.gui_fakes import FakeEngine, build_library
from tests.support.window_helpers import current, make_window

WAIT = 10_000


@pytest.fixture
def sample(library, photo_dir):
    info = build_library(library, photo_dir, count=6, model_every=1, human_every=50, bad_files=0, big=True)
    return library, info


@pytest.fixture
def window(qtbot, sample, settings):
    library, _info = sample
    win = make_window(qtbot, library, settings, FakeEngine(), size=(1280, 800))
    qtbot.waitExposed(win)
    qtbot.waitUntil(lambda: win.image_review.current_image_id() is not None, timeout=WAIT)
    yield win
    if win.photo_verbs.loupe is not None:
        win.photo_verbs.loupe.close()
    win.shutdown()


def full_image_shown(loupe) -> bool:
    image = loupe.view.image
    return image is not None and image.width() == 480


def test_double_click_opens_the_loupe_on_that_photo_fit_to_the_window(qtbot, window):
    win = window
    rect = win.grid.visualRect(win.model.index(2, 0))
    # A real double-click is a press, a release, then the double-click event on the same cell.
    qtbot.mouseClick(win.grid.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.mouseDClick(win.grid.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    loupe = win.photo_verbs.loupe
    assert loupe is not None and loupe.isVisible()
    assert loupe.image_id == win.model.image_id(2)
    qtbot.waitUntil(lambda: loupe.isActiveWindow(), timeout=WAIT)
    qtbot.waitUntil(lambda: full_image_shown(loupe), timeout=WAIT)
    loupe.resize(1000, 700)
    qtbot.waitUntil(lambda: loupe.view.shown_scale() > 1.0, timeout=WAIT)  # 480 px fit into a larger view
    assert loupe.view.label.pixmap().width() <= loupe.view.viewport().width()
    qtbot.keyClick(loupe, Qt.Key.Key_1)
    assert loupe.view.shown_scale() == 1.0
    assert loupe.view.label.pixmap().width() == 480
    qtbot.keyClick(loupe, Qt.Key.Key_Z)
    assert loupe.view.zoom is None


def test_space_opens_and_closes_and_arrows_move_through_the_grid(qtbot, window):
    win = window
    win.image_review.go_to_row(0)
    win.grid.setFocus()
    qtbot.keyClick(win.grid, Qt.Key.Key_Space)
    loupe = win.photo_verbs.loupe
    assert loupe is not None and loupe.isVisible()
    qtbot.waitUntil(lambda: loupe.isActiveWindow(), timeout=WAIT)  # it takes the keyboard from the grid
    assert not loupe.editor.hasFocus()  # so the arrows move between photos at once
    qtbot.keyClick(loupe, Qt.Key.Key_Right)
    assert win.image_review.current_index_row() == 1
    assert loupe.image_id == win.model.image_id(1)
    assert loupe.position.text() == f"2 of {win.model.rowCount()}"
    qtbot.keyClick(loupe, Qt.Key.Key_Left)
    assert loupe.image_id == win.model.image_id(0)
    # In the caption editor the arrows move the cursor, not the photo.
    loupe.editor.setFocus()
    qtbot.waitUntil(lambda: loupe.editor.hasFocus(), timeout=WAIT)
    qtbot.keyClick(loupe.editor, Qt.Key.Key_Right)
    assert loupe.image_id == win.model.image_id(0)
    loupe.close_button.setFocus()
    qtbot.keyClick(loupe.close_button, Qt.Key.Key_Space)
    assert not loupe.isVisible()


def test_caption_typed_in_the_loupe_is_saved_on_next_and_undoable(qtbot, window, sample):
    win = window
    library, _info = sample
    win.image_review.go_to_row(0)
    loupe = win.photo_verbs.open_loupe()
    first = win.model.image_id(0)
    loupe.editor.setPlainText("a red square on the loupe")
    loupe.next_button.click()
    assert current(library, first).text == "a red square on the loupe"
    assert current(library, first).source == "human"
    assert loupe.image_id == win.model.image_id(1)
    # The grid's caption panel follows the same library notice.
    win.image_review.go_to_row(0)
    assert win.panel.editor.toPlainText() == "a red square on the loupe"
    assert loupe.editor.toPlainText() == "a red square on the loupe"
    win.actions["undo"].trigger()
    assert current(library, first).source == "model"
    qtbot.waitUntil(lambda: loupe.editor.toPlainText() == current(library, first).text, timeout=WAIT)


def test_accept_in_the_loupe_verifies_the_models_caption(qtbot, window, sample):
    win = window
    library, _info = sample
    win.image_review.go_to_row(3)
    loupe = win.photo_verbs.open_loupe()
    loupe.accept_button.click()
    assert current(library, win.model.image_id(3)).source == "human"


def test_compare_shows_two_selected_photos_side_by_side(qtbot, window):
    win = window
    selection = win.grid.selectionModel()
    selection.clearSelection()
    for row in (1, 4):
        selection.select(win.model.index(row, 0), QItemSelectionModel.SelectionFlag.Select)
    ids = win.image_review.selected_ids()
    menu = win.photo_verbs.menu.build(ids)
    next(a for a in menu.actions() if a.objectName() == "compare").trigger()
    compare = win.photo_verbs.compare
    assert compare is not None and compare.isVisible()
    assert [p.image_id for p in compare.panes] == ids
    qtbot.waitUntil(lambda: all(p.view.image is not None for p in compare.panes), timeout=WAIT)
    assert all(p.caption.text() for p in compare.panes)
    compare.set_zoom(1.0)
    assert all(p.view.shown_scale() == 1.0 for p in compare.panes)
    compare.close()


@pytest.mark.parametrize("screen", [(1024, 700), (1280, 800)])
def test_loupe_compare_menu_and_list_fit_small_screens(qtbot, window, screen):
    from PySide6.QtCore import QSize

    from desktop_app.dialog_kit import WINDOW_FRAME
    from desktop_app.review import FindReplaceDialog

    win = window
    width, height = screen
    room = QSize(width, height) - WINDOW_FRAME
    win.resize(room)
    win.set_list_view(True)
    win.side_tabs.setCurrentWidget(win.info_panel)
    min_main = win.minimumSizeHint()
    assert min_main.width() <= room.width() and min_main.height() <= room.height()
    selection = win.grid.selectionModel()
    for row in (0, 1):
        selection.select(win.model.index(row, 0), QItemSelectionModel.SelectionFlag.Select)
    loupe = win.photo_verbs.open_loupe()
    compare = win.photo_verbs.open_compare(win.image_review.selected_ids())
    replace = FindReplaceDialog(10, lambda *a, **k: [], win, selection_count=2)
    qtbot.addWidget(replace)
    menu = win.photo_verbs.menu.build(win.image_review.selected_ids())
    for name, widget in (("loupe", loupe), ("compare", compare), ("replace", replace), ("menu", menu)):
        size = widget.size().expandedTo(widget.minimumSizeHint()) if name != "menu" else menu.sizeHint()
        assert size.width() <= room.width() and size.height() <= room.height(), (name, size)
    assert replace.selected_only.isVisibleTo(replace) and replace.selected_only.isChecked()
    compare.close()
    win.set_list_view(False)
