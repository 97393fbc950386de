"""The main window, offscreen: grid model, editing/undo, filters, review keys, jobs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from core.models import Caption
from desktop_app.caption_panel import badge_text, badge_tooltip
from desktop_app.grid_model import ID_ROLE, ROW_ROLE, STATE_ROLE, ImageGridModel
from tests.support.gui_fakes import FakeEngine, build_library
from tests.support.imagegen import write_jpeg
from tests.support.window_helpers import current, make_window

WAIT = 10_000


@pytest.fixture
def sample(library, photo_dir):
    info = build_library(library, photo_dir, count=20, model_every=2, human_every=5, bad_files=1)
    return library, info


@pytest.fixture
def engine():
    return FakeEngine()


@pytest.fixture
def window(qtbot, sample, settings, engine):
    library, _info = sample
    win = make_window(qtbot, library, settings, engine, size=(1400, 900))
    qtbot.waitExposed(win)
    qtbot.waitUntil(lambda: win.image_review.current_image_id() is not None, timeout=WAIT)
    yield win
    win.shutdown()


def set_filter(qtbot, win, **changes):
    """Drive the filter bar's widgets and wait for the new id list."""
    bar = win.filter_bar
    with qtbot.waitSignal(win.ids_loaded, timeout=WAIT):
        if "text" in changes:
            bar.search.setText(changes["text"])
            bar.flush()
        if "state" in changes:
            bar.state.setCurrentIndex(changes["state"])
        if "sort" in changes:
            bar.sort.setCurrentIndex(bar.sort.findData(changes["sort"]))


# -- the grid model ---------------------------------------------------------------------


def test_grid_model_passes_qt_model_tester(qtmodeltester, sample):
    library, info = sample
    model = ImageGridModel(library)
    model.set_ids(info["ids"][:5])
    # Qt's QAbstractItemModelTester stays attached and checks every later change too.
    qtmodeltester.check(model)
    model.set_ids(info["ids"])  # the old list is a prefix: rows are inserted
    model.refresh_ids(info["ids"][3:9])
    model.set_ids(list(reversed(info["ids"])))  # reorder: reset
    model.refresh_all()
    model.set_ids([])
    assert model.rowCount() == 0


def test_grid_model_loads_rows_lazily_in_chunks(qtbot, sample):
    library, info = sample
    model = ImageGridModel(library)
    ids = info["ids"]
    model.set_ids(ids)
    assert model.chunk_loads == 0  # ids only until a row is asked for
    index = model.index(3, 0)
    assert index.data(ID_ROLE) == ids[3]
    assert model.chunk_loads == 0  # the id needs no query
    row = index.data(ROW_ROLE)
    assert row.id == ids[3] and model.chunk_loads == 1
    assert model.index(7, 0).data(STATE_ROLE) in ("model", "verified", "uncaptioned")
    assert model.chunk_loads == 1  # same chunk
    changed = []
    model.dataChanged.connect(lambda a, b, _roles: changed.append((a.row(), b.row())))
    model.refresh_ids([ids[2], ids[3], ids[4], ids[10]])
    assert changed == [(2, 4), (10, 10)]  # contiguous runs, not one signal per image
    assert model.row_of(ids[10]) == 10 and model.row_of(-1) is None
    inserted = []
    model.rowsInserted.connect(lambda _p, first, last: inserted.append((first, last)))
    resets = []
    model.modelReset.connect(lambda: resets.append(1))
    model.set_ids(ids + [999_999])
    assert inserted == [(len(ids), len(ids))] and not resets
    assert model.index(len(ids), 0).data(ROW_ROLE) is None  # unknown id: no row, no crash


def test_window_shows_library_and_sidebar_counts(qtbot, window, sample):
    library, _info = sample
    assert window.model.rowCount() == 21
    qtbot.waitUntil(lambda: window.sidebar.tree.topLevelItemCount() == 2, timeout=WAIT)
    everything = window.sidebar.tree.topLevelItem(0)
    assert everything.text(0) == "All photos" and everything.text(1) == "21"
    root_item = window.sidebar.tree.topLevelItem(1)
    assert {root_item.child(i).text(0) for i in range(root_item.childCount())} == {"beach", "city"}
    # Selecting a sub-folder filters the grid to it.
    beach = next(root_item.child(i) for i in range(root_item.childCount()) if root_item.child(i).text(0) == "beach")
    with qtbot.waitSignal(window.ids_loaded, timeout=WAIT):
        window.sidebar.tree.setCurrentItem(beach)
    assert window.model.rowCount() == int(beach.text(1)) == 10
    rows = [window.model.row_data(r) for r in range(window.model.rowCount())]
    assert all(r.rel_path.startswith("beach/") for r in rows)
    # The first row was painted with a thumbnail from the worker threads.
    first = window.model.row_data(0)
    qtbot.waitUntil(lambda: window.thumbs.pixmap(first.fingerprint, first.path) is not None, timeout=WAIT)
    assert (library.cache_dir / "thumbnails").is_dir()


# -- editing, accept, undo/redo, revert ------------------------------------------------


def go_to_state(window, state):
    for r in range(window.model.rowCount()):
        if window.model.row_data(r).state == state:
            window.image_review.go_to_row(r)
            return window.model.row_data(r)
    raise AssertionError(f"no {state} image")


def test_edit_accept_undo_redo_revert(qtbot, window, sample):
    library, _ = sample
    row = go_to_state(window, "model")
    model_caption = current(library, row.id)
    assert window.panel.editor.toPlainText() == model_caption.text
    assert window.panel.model_text.text() == model_caption.text

    # Edit: typed text is saved when the person saves (or moves on).
    window.panel.editor.setPlainText("a corrected caption")
    assert window.panel.is_dirty()
    window.actions["save"].trigger()
    saved = current(library, row.id)
    assert (saved.text, saved.source, saved.parent_id) == ("a corrected caption", "human", model_caption.id)
    assert window.model.row_data(window.model.row_of(row.id)).state == "verified"
    assert window.panel.history.topLevelItemCount() == 2
    # The model's caption stays visible beside the person's.
    assert window.panel.model_text.text() == model_caption.text

    window.actions["undo"].trigger()
    back = current(library, row.id)
    assert (back.id, back.source) == (model_caption.id, "model")
    assert window.panel.editor.toPlainText() == model_caption.text
    assert window.model.row_data(window.model.row_of(row.id)).state == "model"
    window.actions["redo"].trigger()
    assert current(library, row.id).text == "a corrected caption"

    # Accept on a model caption (another image) marks it verified, undoable.
    other = go_to_state(window, "model")
    window.actions["accept"].trigger()
    assert current(library, other.id).source == "human"
    window.actions["undo"].trigger()
    assert current(library, other.id).source == "model"

    # Revert the first image to its model caption's words via the history.
    window.image_review.go_to_image(row.id)
    window.image_review.revert_to(model_caption.id)
    reverted = current(library, row.id)
    assert reverted.text == model_caption.text and reverted.source == "human"
    assert window.caption_undo.undo_stack.count() == 2  # edit, revert (the undone accept was dropped)
    window.actions["undo"].trigger()
    assert current(library, row.id).text == "a corrected caption"


def test_moving_on_saves_the_edit_and_nothing_is_lost(qtbot, window, sample):
    library, _ = sample
    row = go_to_state(window, "uncaptioned")
    window.panel.editor.setPlainText("typed but not saved explicitly")
    window.image_review.next_image()
    assert current(library, row.id).text == "typed but not saved explicitly"
    # An emptied caption is never written (captions cannot be empty).
    target = go_to_state(window, "verified")
    before = current(library, target.id).text
    window.panel.editor.setPlainText("   ")
    window.image_review.next_image()
    assert current(library, target.id).text == before


# -- search, filters, sort, review queue, find/replace ------------------------------


def test_search_filters_sort_and_review_queue(qtbot, window, sample):
    _library, _ = sample
    set_filter(qtbot, window, text="ramen")
    assert window.model.rowCount() >= 1
    assert all("ramen" in window.model.row_data(r).caption for r in range(window.model.rowCount()))
    set_filter(qtbot, window, text="")
    assert window.model.rowCount() == 21
    set_filter(qtbot, window, state=1)  # uncaptioned
    assert {window.model.row_data(r).state for r in range(window.model.rowCount())} == {"uncaptioned"}
    set_filter(qtbot, window, state=0)
    # Review queue: model captions, least confident first.
    with qtbot.waitSignal(window.ids_loaded, timeout=WAIT):
        window.actions["review_queue"].trigger()
    rows = [window.model.row_data(r) for r in range(window.model.rowCount())]
    assert rows and {r.state for r in rows} == {"model"}
    assert [r.score for r in rows] == sorted(r.score for r in rows)
    assert window.image_review.current_image_id() == rows[0].id  # starts at the worst


def test_changed_since_captioned_badge_filter_sidebar_and_review_queue(qtbot, window, sample):
    library, _ = sample
    verified = next(
        window.model.row_data(r) for r in range(window.model.rowCount()) if window.model.row_data(r).state == "verified"
    )
    path = write_jpeg(Path(verified.path), (10, 10, 10), (70, 50), seed=77)  # another picture, same name
    os.utime(path, ns=(1, 1))
    assert library.scan().outdated == 1
    with qtbot.waitSignal(window.sidebar_refreshed, timeout=WAIT):
        window.sidebar_content.refresh()
    assert "1 changed since captioned" in window.sidebar.tree.topLevelItem(0).toolTip(1)
    labels = [window.filter_bar.state.itemText(i) for i in range(window.filter_bar.state.count())]
    set_filter(qtbot, window, state=labels.index("Picture changed"))
    rows = [window.model.row_data(r) for r in range(window.model.rowCount())]
    assert [(r.id, r.state, r.caption) for r in rows] == [(verified.id, "changed", None)]
    assert badge_text(rows[0])[0] == "changed" and "Changed since captioned" in badge_tooltip(rows[0])
    assert window.model.index(0, 0).data(STATE_ROLE) == "changed"
    set_filter(qtbot, window, state=0)
    with qtbot.waitSignal(window.ids_loaded, timeout=WAIT):
        window.actions["review_queue"].trigger()
    queue = [window.model.row_data(r) for r in range(window.model.rowCount())]
    assert queue[-1].id == verified.id and {r.state for r in queue[:-1]} == {"model"}  # unscored: last


def test_find_replace_is_one_undo_step(qtbot, window, sample):
    library, _ = sample
    with library.db.read() as session:
        before = {c.image_id: c.text for c in session.query(Caption).filter(Caption.is_current.is_(True))}
    hits = {i for i, t in before.items() if " a " in f" {t} "}
    count = window.image_review.find_replace("a", "one")  # whole-substring replace, case-insensitive
    assert count >= len(hits) > 0
    with library.db.read() as session:
        after = {c.image_id: c.text for c in session.query(Caption).filter(Caption.is_current.is_(True))}
    assert any("one" in after[i] for i in hits)
    window.actions["undo"].trigger()
    with library.db.read() as session:
        undone = {c.image_id: c.text for c in session.query(Caption).filter(Caption.is_current.is_(True))}
    assert undone == before


def test_captions_changed_by_a_dialog_keep_the_grids_scroll_position(qtbot, window):
    window.resize(1024, 700)
    window.image_review.go_to_row(0)
    bar = window.grid.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0, timeout=WAIT)
    bar.setValue(bar.maximum())
    scrolled = bar.value()
    with qtbot.waitSignal(window.ids_loaded, timeout=WAIT):
        window.verbs._captions_changed()  # what an import's end does
    assert bar.value() == scrolled > 0 and window.grid.currentIndex().row() == 0


def test_caption_panel_keeps_its_layout_when_the_provenance_is_long(qtbot, window, sample):
    import dataclasses

    from core import view_rows

    library, info = sample
    panel = window.panel
    for width in (1024, 1280):
        window.resize(width, 700)
        qtbot.waitUntil(lambda width=width: window.width() == width, timeout=WAIT)
        window.image_review.go_to_image(next(i for i in info["ids"] if getattr(current(library, i), "source", "") == "model"))
        row = window.image_review.current_row()
        with library.db.read() as session:
            details = view_rows.caption_details(session, row.id)
        assert details.current is not None
        QApplication.processEvents()
        parts = (panel.editor, panel.save_button, panel.model_box, panel.history)
        short = [w.geometry() for w in parts]
        long_name = "organisation/" + "a-very-long-fine-tuned-captioner-name-" * 6
        longer = dataclasses.replace(details.current, model_name=long_name, adapter="adapters/" + "x" * 120)
        panel.show_image(row, dataclasses.replace(details, current=longer))
        QApplication.processEvents()
        assert [w.geometry() for w in parts] == short
        assert long_name in panel.provenance.toolTip()
    # Nothing selected: no empty badge beside "No image selected".
    panel.show_image(None, None)
    assert panel.title.full_text() == "No image selected" and panel.badge.isHidden()


# -- keyboard review flow ------------------------------------------------------------


def press(qtbot, window, key, modifiers=Qt.KeyboardModifier.NoModifier):
    qtbot.keyClick(QApplication.focusWidget() or window.grid, key, modifiers)


def test_shortcuts_drive_the_review_flow(qtbot, window, sample):
    library, _ = sample
    window.activateWindow()
    window.grid.setFocus()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=WAIT)
    assert window.actions["accept_next"].shortcut().toString() == "Ctrl+Return"

    window.image_review.go_to_row(0)
    press(qtbot, window, Qt.Key.Key_Right, Qt.KeyboardModifier.AltModifier)
    assert window.image_review.current_index_row() == 1
    press(qtbot, window, Qt.Key.Key_Left, Qt.KeyboardModifier.AltModifier)
    assert window.image_review.current_index_row() == 0

    # Next uncaptioned.
    press(qtbot, window, Qt.Key.Key_U, Qt.KeyboardModifier.AltModifier)
    assert window.image_review.current_row().state == "uncaptioned"

    # Next least confident walks model captions in ascending confidence.
    press(qtbot, window, Qt.Key.Key_L, Qt.KeyboardModifier.AltModifier)
    first = window.image_review.current_row()
    press(qtbot, window, Qt.Key.Key_L, Qt.KeyboardModifier.AltModifier)
    second = window.image_review.current_row()
    assert first.state == second.state == "model" and first.score <= second.score and first.id != second.id

    # Accept and next: verified, and the cursor moved on.
    row_before = window.image_review.current_index_row()
    press(qtbot, window, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert current(library, second.id).source == "human"
    assert window.image_review.current_index_row() == row_before + 1

    # Edit (F2 focuses the editor), type, edit-and-next saves and moves on.
    target = window.image_review.current_row()
    press(qtbot, window, Qt.Key.Key_F2)
    assert QApplication.focusWidget() is window.panel.editor
    qtbot.keyClicks(window.panel.editor, "typed by keyboard")
    press(qtbot, window, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert current(library, target.id).text == "typed by keyboard"
    assert window.image_review.current_index_row() == row_before + 2
    assert QApplication.focusWidget() is window.panel.editor

    # Undo from the grid (the editor keeps Ctrl+Z for its own typing).
    window.grid.setFocus()
    press(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert current(library, target.id) is None or current(library, target.id).text != "typed by keyboard"


def test_long_session_of_signals_and_empty_data_does_not_crash(qtbot):
    """PySide6 6.12 on CPython 3.11 drops a reference to True/False per emit and to None
    per empty data(); without desktop_app._compat the interpreter aborts after ~2 000
    emits (see that module).  A long session makes hundreds of thousands."""
    import sys

    from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, Signal

    class Emitter(QObject):
        fired = Signal(object)

    class Empty(QAbstractListModel):
        def rowCount(self, parent=QModelIndex()):  # noqa: B008
            return 1

        def data(self, index, role=Qt.ItemDataRole.DisplayRole):
            return None

    emitter = Emitter()
    seen = []
    emitter.fired.connect(seen.append)
    model = Empty()
    index = model.index(0, 0)
    before = sys.getrefcount(True), sys.getrefcount(None)
    for _ in range(30_000):
        emitter.fired.emit(None)
        index.data()
    assert len(seen) == 30_000
    # Whatever PySide6 does to the counts, True and None are still alive and far from 0.
    assert sys.getrefcount(True) > 1_000_000 or sys.getrefcount(True) >= before[0] - 10
    assert sys.getrefcount(None) > 1_000_000 or sys.getrefcount(None) >= before[1] - 10
