"""The caption panel per kind: tabs with state dots, alt text's count, keyword chips, accept and undo per kind."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from core import captions
from core.kinds import ALT_TEXT_NOTE_CHARS, ALT_TEXT_WARNING_CHARS, add_kind
from desktop_app.keyword_chips import KeywordChips
from desktop_app.kind_tabs import NOTE_COLOR, WARNING_COLOR
from desktop_app.operations import LibraryChanges
from tests.support.gui_fakes import build_library
from tests.support.window_helpers import review_window

WAIT = 10_000


@pytest.fixture
def sample(library, photo_dir):
    info = build_library(library, photo_dir, count=6, model_every=2, human_every=0, bad_files=0)
    ids = info["ids"]
    with library.db.write() as session:
        captions.add_model_caption(session, ids[0], "A red square on white.", model_name="m", kind="alt_text",
                                   score=-0.2)
        captions.add_model_caption(session, ids[0], "red, square, shapes|square", model_name="m", kind="keywords")
        captions.set_human_caption(session, ids[1], "beach, sea|waves", kind="keywords")
        captions.add_model_caption(session, ids[2], "A green square.", model_name="m", kind="alt_text")
    return library, info


@pytest.fixture
def window(qtbot, sample, settings):
    library, _info = sample
    yield from review_window(qtbot, library, settings)


def value(library, image_id, kind):
    with library.db.read() as session:
        current = captions.current_caption(session, image_id, kind)
        return (current.text, current.source) if current is not None else None


def test_each_kind_is_a_tab_with_its_own_state_and_model_words(qtbot, window, sample):
    library, info = sample
    panel = window.panel
    window.image_review.go_to_image(info["ids"][0])
    assert panel.kind_names()[:3] == ["caption", "alt_text", "keywords"]
    assert "keywords" in panel.kind_names() and panel.kind == "caption"
    tabs = panel.kind_tabs
    tips = {tabs.tabData(i): tabs.tabToolTip(i) for i in range(tabs.count())}
    assert tips["alt_text"] == "Alt text: model" and tips["title"] == "Title: uncaptioned"
    assert not tabs.tabIcon(1).isNull()

    assert panel.set_kind("alt_text")
    assert panel.editor.toPlainText() == "A red square on white."
    assert panel.badge.text() == "model 82%"
    assert panel.model_box.title() == "Model's alt text"
    assert panel.history.topLevelItemCount() == 1 and panel.accept_button.isEnabled()
    # The caption kind's own words are not shown in the alt text tab.
    assert value(library, info["ids"][0], "caption")[0] != panel.editor.toPlainText()

    # Moving to another photo keeps the kind; a photo with no alt text has none to accept.
    window.image_review.go_to_image(info["ids"][1])
    assert panel.kind == "alt_text" and panel.editor.toPlainText() == ""
    assert panel.badge.text() == "uncaptioned" and not panel.accept_button.isEnabled()


def test_alt_text_counts_live_and_changes_colour_at_the_limits(qtbot, window, sample):
    _library, info = sample
    panel = window.panel
    window.image_review.go_to_image(info["ids"][0])
    assert panel.alt_count.isHidden()  # the caption has no advised length
    panel.set_kind("alt_text")
    assert panel.alt_count.isVisible() and panel.alt_count.text() == f"22 / {ALT_TEXT_NOTE_CHARS}"
    parts = (panel.editor, panel.save_button, panel.model_box, panel.history)
    before = [w.geometry() for w in parts]
    panel.editor.setPlainText("x" * 87)
    assert panel.alt_count.text() == "87 / 125" and panel.alt_count.level == ""
    panel.editor.setPlainText("x" * (ALT_TEXT_NOTE_CHARS + 1))
    assert panel.alt_count.level == "note" and NOTE_COLOR in panel.alt_count.styleSheet()
    panel.editor.setPlainText("x" * (ALT_TEXT_WARNING_CHARS + 1))
    assert panel.alt_count.level == "warning" and WARNING_COLOR in panel.alt_count.styleSheet()
    QApplication.processEvents()
    assert [w.geometry() for w in parts] == before  # counting moves nothing


def test_keyword_chips_edit_save_and_undo(qtbot, window, sample):
    library, info = sample
    panel = window.panel
    window.image_review.go_to_image(info["ids"][0])
    panel.set_kind("keywords")
    chips = panel.keywords
    assert panel.value_stack.currentWidget() is chips
    assert chips.chip_labels() == ["red", "square", "shapes › square"]
    # The completer offers the library's vocabulary (both photos' keywords, every level).
    vocabulary = chips.entry.completer().model().stringList()
    assert {"beach", "sea", "sea|waves", "shapes|square"} <= set(vocabulary)

    # (setText: typing would open the completion popup, which the offscreen platform warns about.)
    chips.entry.setText("Sunset")
    qtbot.keyClick(chips.entry, Qt.Key.Key_Return)
    chips.entry.setText("sky|blue")
    qtbot.keyClick(chips.entry, Qt.Key.Key_Comma)
    assert chips.chip_labels() == ["red", "square", "shapes › square", "sunset", "sky › blue"]
    assert chips.entry.text() == ""
    chips._chips[0].remove.click()
    assert panel.is_dirty() and panel.save_button.isEnabled()
    window.actions["save"].trigger()
    assert value(library, info["ids"][0], "keywords") == ("square\nshapes|square\nsunset\nsky|blue", "human")
    assert value(library, info["ids"][0], "caption")[1] == "model"  # other kinds untouched
    assert panel.kind_tabs.tabToolTip(panel.kind_names().index("keywords")) == "Keywords: verified"

    window.actions["undo"].trigger()
    assert value(library, info["ids"][0], "keywords") == ("red\nsquare\nshapes|square", "model")
    assert chips.chip_labels() == ["red", "square", "shapes › square"]
    window.actions["redo"].trigger()
    assert value(library, info["ids"][0], "keywords")[1] == "human"


def test_leaving_a_kind_saves_it_and_accept_is_per_kind(qtbot, window, sample):
    library, info = sample
    panel = window.panel
    image_id = info["ids"][0]
    window.image_review.go_to_image(image_id)
    panel.set_kind("alt_text")
    panel.editor.setPlainText("A red square.")
    assert panel.set_kind("title")  # leaving the tab saved the alt text, as leaving a photo does
    assert value(library, image_id, "alt_text") == ("A red square.", "human")
    # An empty text is refused: the tab stays and nothing typed is lost.
    panel.set_kind("alt_text")
    panel.editor.setPlainText("   ")
    assert not panel.set_kind("caption") and panel.kind == "alt_text" and panel.message.isVisible()
    panel.editor.setPlainText("A red square.")

    # Accept (Ctrl+Return's accept-and-next too) accepts the shown kind only.
    panel.set_kind("keywords")
    window.actions["accept"].trigger()
    assert value(library, image_id, "keywords")[1] == "human"
    assert value(library, image_id, "caption")[1] == "model"
    window.actions["undo"].trigger()
    assert value(library, image_id, "keywords")[1] == "model"
    window.actions["undo"].trigger()  # then the alt text edit
    assert value(library, image_id, "alt_text") == ("A red square on white.", "model")


def test_accept_a_selection_per_kind_is_one_undo_step(qtbot, window, sample):
    library, info = sample
    panel = window.panel
    ids = info["ids"]
    window.image_review.go_to_image(ids[0])
    panel.set_kind("alt_text")
    model = window.model
    selection = window.grid.selectionModel()
    for image_id in ids[:3]:
        selection.select(model.index(model.row_of(image_id), 0), selection.SelectionFlag.Select)
    assert len(window.image_review.selected_ids()) == 3
    window.actions["accept"].trigger()
    # The two photos with model alt text are verified; the one without is left alone; captions untouched.
    assert [value(library, i, "alt_text") for i in ids[:3]] == [
        ("A red square on white.", "human"), None, ("A green square.", "human")]
    assert value(library, ids[0], "caption")[1] == "model"
    window.actions["undo"].trigger()
    assert [value(library, i, "alt_text")[1] for i in (ids[0], ids[2])] == ["model", "model"]


def test_the_kind_filter_narrows_the_grid_and_picks_the_tab(qtbot, window, sample):
    library, info = sample
    bar = window.filter_bar
    with library.db.write() as session:
        add_kind(session, "training_prompt", "Training prompt")
    window.notifier.notify(LibraryChanges(library=True))
    qtbot.waitUntil(lambda: bar.kind_choice.findData("training_prompt") >= 0, timeout=WAIT)
    with qtbot.waitSignal(window.ids_loaded, timeout=WAIT):
        bar.kind_choice.setCurrentIndex(bar.kind_choice.findData("alt_text"))
    assert window.panel.kind == "alt_text"
    with qtbot.waitSignal(window.ids_loaded, timeout=WAIT):
        bar.state.setCurrentIndex(bar.state.findText("Model (unverified)"))
    assert sorted(window.model.ids()) == sorted(info["ids"][i] for i in (0, 2))
    with qtbot.waitSignal(window.ids_loaded, timeout=WAIT):
        bar.search.setText("green")
        bar.flush()
    assert window.model.ids() == [info["ids"][2]]
    # A user kind gets its tab when a photo is shown.
    window.image_review.go_to_image(info["ids"][2])
    assert "training_prompt" in window.panel.kind_names()


def test_keyword_chips_alone(qtbot):
    chips = KeywordChips()
    qtbot.addWidget(chips)
    chips.set_text("animals|dogs\nbeach")
    assert chips.chip_labels() == ["animals › dogs", "beach"]
    changes = []
    chips.changed.connect(lambda: changes.append(chips.text()))
    chips.entry.setText("Beach; Sand")
    chips.add_typed()
    assert chips.text() == "animals|dogs\nbeach\nsand" and changes[-1] == chips.text()
    qtbot.keyClick(chips.entry, Qt.Key.Key_Backspace)  # an empty field: the last chip goes
    assert chips.chip_labels() == ["animals › dogs", "beach"]
    chips.entry.setText("half typ")  # typed but not added yet still counts: nothing is lost on save
    assert chips.text() == "animals|dogs\nbeach\nhalf typ"


def test_the_panel_keeps_its_layout_across_kinds_and_fits_1024x700(qtbot, window, sample):
    _library, info = sample
    panel = window.panel
    window.resize(1024, 700)
    qtbot.waitUntil(lambda: window.width() == 1024, timeout=WAIT)
    window.image_review.go_to_image(info["ids"][0])
    QApplication.processEvents()
    parts = (panel.value_stack, panel.save_button, panel.model_box, panel.history)
    shown = [w.geometry() for w in parts]
    for kind in ("alt_text", "keywords", "title", "caption"):
        assert panel.set_kind(kind)
        QApplication.processEvents()
        assert [w.geometry() for w in parts] == shown, kind
    # The caption, alt text and keywords tabs are whole and inside the bar at the narrowest window.
    bar = panel.kind_tabs
    for index in range(3):
        assert bar.tabRect(index).right() <= bar.width() and bar.tabText(index) in ("Caption", "Alt text", "Keywords")
    assert window.minimumSizeHint().width() <= 1024 * 0.95


def test_ctrl_return_accepts_the_shown_kind_and_moves_on(qtbot, window, sample):
    library, info = sample
    window.activateWindow()
    window.image_review.go_to_image(info["ids"][0])
    window.panel.set_kind("keywords")
    window.grid.setFocus()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=WAIT)
    row = window.image_review.current_index_row()
    qtbot.keyClick(window.grid, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert value(library, info["ids"][0], "keywords")[1] == "human"
    assert value(library, info["ids"][0], "alt_text")[1] == "model" and value(library, info["ids"][0], "caption")[1] == "model"
    assert window.image_review.current_index_row() == row + 1 and window.panel.kind == "keywords"


def test_the_grid_shows_the_filtered_kind_and_the_review_queue_follows_it(qtbot, window, sample):
    library, info = sample
    bar, ids = window.filter_bar, info["ids"]
    with qtbot.waitSignal(window.ids_loaded, timeout=WAIT):
        bar.kind_choice.setCurrentIndex(bar.kind_choice.findData("alt_text"))
    rows = {i: window.model.row_data(window.model.row_of(i)) for i in ids}
    assert (rows[ids[0]].caption, rows[ids[0]].state) == ("A red square on white.", "model")
    assert rows[ids[1]].state == "uncaptioned" and rows[ids[2]].caption == "A green square."
    # The panel's caption tab still shows the caption's own state, not the grid row's kind.
    window.image_review.go_to_image(ids[1])
    assert window.panel.kind == "alt_text" and window.panel.kind_state("caption") == "uncaptioned"
    assert window.panel.kind_state("keywords") == "verified"
    # Next uncaptioned and the review queue's count are about alt text too.
    window.image_review.go_to_image(ids[0])
    assert window.image_review.next_uncaptioned()
    reached = window.image_review.current_image_id()
    assert reached != ids[0] and value(library, reached, "alt_text") is None
    bar.set_review_queue(True)
    qtbot.waitUntil(lambda: bar.review_progress_text() == "0 of 2 reviewed", timeout=WAIT)
    window.image_review.accept_current()
    qtbot.waitUntil(lambda: bar.review_progress_text() == "1 of 2 reviewed", timeout=WAIT)
    assert sum(value(library, i, "alt_text") == (t, "human") for i, t in
               ((ids[0], "A red square on white."), (ids[2], "A green square."))) == 1


def test_f2_and_ctrl_z_in_the_keyword_field(qtbot, window, sample):
    library, info = sample
    window.activateWindow()
    window.image_review.go_to_image(info["ids"][0])
    window.panel.set_kind("keywords")
    window.grid.setFocus()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=WAIT)
    qtbot.keyClick(window.grid, Qt.Key.Key_F2)
    entry = window.panel.keywords.entry
    assert QApplication.focusWidget() is entry
    entry.setText("dune")
    qtbot.keyClick(entry, Qt.Key.Key_Return)
    window.actions["save"].trigger()
    assert value(library, info["ids"][0], "keywords")[0].endswith("dune")
    # The field has nothing of its own to undo: Ctrl+Z reaches the window's undo of the save.
    entry.setFocus()
    entry.clear()
    qtbot.keyClick(entry, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert value(library, info["ids"][0], "keywords") == ("red\nsquare\nshapes|square", "model")


def test_find_and_replace_works_on_the_filtered_kind(qtbot, window, sample):
    library, info = sample
    ids, bar = info["ids"], window.filter_bar
    captions_before = {i: value(library, i, "caption") for i in ids}
    with qtbot.waitSignal(window.ids_loaded, timeout=WAIT):
        bar.kind_choice.setCurrentIndex(bar.kind_choice.findData("alt_text"))
    assert window.image_review.find_replace("square", "box") == 2
    assert value(library, ids[0], "alt_text") == ("A red box on white.", "model")  # still unreviewed
    assert value(library, ids[2], "alt_text")[0] == "A green box."
    assert {i: value(library, i, "caption") for i in ids} == captions_before
    window.actions["undo"].trigger()
    assert value(library, ids[0], "alt_text")[0] == "A red square on white."
