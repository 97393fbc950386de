"""Work on a selection and the photos' context menu: multi-select, accept, "not verified",
find and replace within the selection, caption/export/metadata scoped to it, file verbs.

pytest-qt, offscreen, a real temporary library and the real core; the fake captioner.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QItemSelectionModel, Qt, QUrl
from PySide6.QtWidgets import QApplication

from core import edits, queries
from core.queries import ImageFilter
from desktop_app import photo_menu
from desktop_app.dialog_kit import SCOPE_LIBRARY, SCOPE_SELECTION
from tests.support.gui_fakes import build_library
from tests.support.window_helpers import current, review_window

WAIT = 10_000


@pytest.fixture
def sample(library, photo_dir):
    info = build_library(library, photo_dir, count=12, model_every=1, human_every=5, bad_files=0)
    return library, info


@pytest.fixture
def window(qtbot, sample, settings):
    library, _info = sample
    yield from review_window(qtbot, library, settings)


def rows_in_state(win, state: str) -> list[int]:
    return [r for r in range(win.model.rowCount()) if win.model.row_data(r).state == state]


def click_row(qtbot, win, row: int, modifier=Qt.KeyboardModifier.NoModifier, button=Qt.MouseButton.LeftButton):
    rect = win.grid.visualRect(win.model.index(row, 0))
    qtbot.mouseClick(win.grid.viewport(), button, modifier, rect.center())


def select_rows(win, rows: list[int]) -> None:
    selection = win.grid.selectionModel()
    selection.clearSelection()
    for row in rows:
        selection.select(win.model.index(row, 0), QItemSelectionModel.SelectionFlag.Select)
    selection.setCurrentIndex(win.model.index(rows[0], 0), QItemSelectionModel.SelectionFlag.NoUpdate)


def test_filter_by_ids_limits_every_query(sample):
    library, _info = sample
    with library.db.read() as session:
        every = queries.filtered_ids(session, ImageFilter())
        picked = tuple(every[2:5])
        assert queries.filtered_ids(session, ImageFilter(ids=picked)) == list(picked)
        assert queries.filtered_ids(session, ImageFilter(ids=())) == []
        assert queries.count_filtered(session, ImageFilter(ids=picked, states=frozenset({"verified"}))) <= 3


def test_unverify_takes_back_acceptances_only(sample):
    library, _info = sample
    with library.db.read() as session:
        ids = queries.filtered_ids(session, ImageFilter(states=frozenset({"model"})))
    accepted = edits.accept_many(library.db, ids[:2])
    assert len(accepted) == 2 and all(current(library, i).source == "human" for i in ids[:2])
    edits.save_edit(library.db, ids[2], "a person's own words")
    changes = edits.unverify(library.db, ids[:3])
    assert [c.image_id for c in changes] == ids[:2]
    assert current(library, ids[0]).source == "model"
    assert current(library, ids[2]).text == "a person's own words"  # a person's words stay theirs


def test_shift_ctrl_click_and_ctrl_a_select(qtbot, window):
    win = window
    win.grid.setFocus()
    click_row(qtbot, win, 1)
    click_row(qtbot, win, 4, Qt.KeyboardModifier.ShiftModifier)
    assert len(win.image_review.selected_ids()) == 4
    click_row(qtbot, win, 7, Qt.KeyboardModifier.ControlModifier)
    assert len(win.image_review.selected_ids()) == 5
    qtbot.keyClick(win.grid, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    assert len(win.image_review.selected_ids()) == win.model.rowCount()


def test_accept_selection_is_one_undo_step(qtbot, window, sample):
    win = window
    library, _info = sample
    model_rows = rows_in_state(win, "model")[:3]
    ids = [win.model.image_id(r) for r in model_rows]
    select_rows(win, model_rows)
    win.actions["accept"].trigger()
    assert all(current(library, i).source == "human" for i in ids)
    qtbot.waitUntil(lambda: all(win.model.row_data(r).state == "verified" for r in model_rows), timeout=WAIT)
    win.actions["undo"].trigger()
    assert all(current(library, i).source == "model" for i in ids)


def test_context_menu_unverify_and_accept(qtbot, window, sample):
    win = window
    library, _info = sample
    model_rows = rows_in_state(win, "model")[:2]
    ids = [win.model.image_id(r) for r in model_rows]
    select_rows(win, model_rows)
    menu = win.photo_verbs.menu.build(win.image_review.target_ids())
    entries = {a.objectName(): a for a in menu.actions() if a.objectName()}
    assert {"loupe", "compare", "caption", "accept", "unverify", "show_in_folder", "open_with", "copy_path",
            "reveal", "export", "write_metadata", "replace", "findSimilar"} <= set(entries)
    assert not entries["findSimilar"].isEnabled()  # one photo at a time
    assert entries["compare"].isEnabled() and not entries["reveal"].isEnabled()  # two selected
    entries["accept"].trigger()
    assert all(current(library, i).source == "human" for i in ids)
    menu = win.photo_verbs.menu.build(win.image_review.target_ids())
    next(a for a in menu.actions() if a.objectName() == "unverify").trigger()
    assert all(current(library, i).source == "model" for i in ids)
    assert "not verified" in win.statusBar().currentMessage()


def test_right_click_on_an_unselected_photo_acts_on_it(qtbot, window, monkeypatch):
    win = window
    shown = []
    monkeypatch.setattr(win.photo_verbs.menu, "popup", lambda ids, pos: shown.append(list(ids)))
    select_rows(win, [0, 1])
    rect = win.grid.visualRect(win.model.index(5, 0))
    win.photo_verbs.show_menu(rect.center())
    assert shown == [[win.model.image_id(5)]]
    # On a selected photo the menu keeps the whole selection.
    select_rows(win, [0, 1])
    win.photo_verbs.show_menu(win.grid.visualRect(win.model.index(1, 0)).center())
    assert sorted(shown[-1]) == sorted(win.model.image_id(r) for r in (0, 1))


def test_file_verbs_copy_path_show_in_folder_open(qtbot, window, monkeypatch):
    win = window
    opened: list[QUrl] = []
    monkeypatch.setattr(photo_menu, "open_url", lambda url: opened.append(url) or True)
    select_rows(win, [0, 1])
    ids = win.image_review.target_ids()
    paths = [win.model.row_data(r).path for r in (0, 1)]
    win.photo_verbs.menu.trigger("copy_path", ids)
    assert QApplication.clipboard().text().splitlines() == paths
    win.photo_verbs.menu.trigger("show_in_folder", ids)
    assert [u.toLocalFile() for u in opened] == list(dict.fromkeys(str(Path(p).parent) for p in paths))
    opened.clear()
    win.photo_verbs.menu.trigger("open_with", ids)
    assert [u.toLocalFile() for u in opened] == paths


def test_reveal_in_folder_tree_selects_the_photos_folder(qtbot, window):
    win = window
    row = next(r for r in range(win.model.rowCount()) if "beach/" in win.model.row_data(r).rel_path)
    image_id = win.model.image_id(row)
    win.image_review.go_to_row(row)
    qtbot.waitUntil(lambda: any(i.text(0) == "beach" for i in win.sidebar._all_items()), timeout=WAIT)
    with qtbot.waitSignal(win.ids_loaded, timeout=WAIT):
        assert win.photo_verbs.reveal_in_tree(image_id)
    assert win.sidebar.location()[1] == "beach/"
    assert all("beach/" in win.model.row_data(r).rel_path for r in range(win.model.rowCount()))
    assert win.image_review.current_image_id() == image_id


def test_find_replace_within_the_selection(qtbot, window, sample):
    win = window
    library, _info = sample
    with library.db.read() as session:
        every = [c for c in queries.find_replace_candidates(session, ImageFilter(), "a")]
    assert len(every) > 3
    rows = [win.model.row_of(image_id) for image_id, _c, _t in every[:2]]
    select_rows(win, rows)
    preview = win.image_review.replacement_preview("a", "A", True, selected=True)
    assert {p[0] for p in preview} <= set(win.image_review.selected_ids())
    before = {i: current(library, i).text for i, _c, _t in every}
    count = win.image_review.find_replace("a", "A", case_sensitive=True, selected=True)
    assert count == len(preview) >= 1
    changed = {i for i in before if current(library, i).text != before[i]}
    assert changed <= set(win.image_review.selected_ids())


def test_export_and_metadata_from_the_menu_start_on_the_selection(qtbot, window):
    win = window
    select_rows(win, [0, 1, 2])
    ids = win.image_review.target_ids()
    for key, opened in (("export", "export"), ("write_metadata", "metadata")):
        win.photo_verbs.menu.trigger(key, ids)
        dialog = win.verbs.open_dialogs[opened]
        assert dialog.scope_picker.key() == SCOPE_SELECTION
        assert dialog.scope_picker.scope.selection == tuple(ids)
        runner = getattr(dialog, "runner", None)
        # Its check of the photos runs in the background: let it end before the library closes.
        qtbot.waitUntil(lambda r=runner: r is None or not r.running, timeout=WAIT)
        dialog.close()
        win.verbs.open_dialogs.clear()
    # From the menu bar the dialogs start on the whole library, as before.
    dialog = win.verbs.open_export()
    assert dialog.scope_picker.key() == SCOPE_LIBRARY
    dialog.close()


def test_caption_from_the_menu_scopes_to_the_selection(qtbot, window, monkeypatch):
    from desktop_app import caption_dialog
    from desktop_app.controllers import caption_jobs

    win = window
    started = []
    monkeypatch.setattr(caption_dialog.CaptionDialog, "exec", lambda self: caption_dialog.CaptionDialog.DialogCode.Accepted)
    monkeypatch.setattr(caption_jobs.CaptionJobsController, "start_captioning",
                        lambda self, spec, scope, *rest: started.append((scope, list(self.current.selected_ids()))))
    select_rows(win, [3])
    win.photo_verbs.menu.trigger("caption", win.image_review.target_ids())
    assert started == [(SCOPE_SELECTION, [win.model.image_id(3)])]
