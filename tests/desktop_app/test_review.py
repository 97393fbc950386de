"""Review in the main window: a layout that never moves, review semantics, search, numbers.

pytest-qt on the offscreen platform with a real temporary library and the real core;
the captioner is the fake from :mod:`tests.support.gui_fakes` (no model is loaded).
"""

from __future__ import annotations

import math

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QApplication, QMessageBox, QToolButton

from core import queries, view_rows
from core.captions import (
    add_model_caption,
    format_confidence,
    provenance_lines,
    score_for_percent,
)
from core.provenance import BulkReplace, Provenance
from core.queries import ImageFilter, review_queue_filter
from desktop_app.app_settings import AppSettings
from desktop_app.caption_panel import badge_text
from desktop_app.delegate import wrap_lines
from desktop_app.review import FindReplaceDialog
from tests.support.gui_fakes import build_library
from tests.support.imagegen import write_jpeg
from tests.support.window_helpers import current, review_window

WAIT = 10_000
LONG_FOLDER = "2023/Summer holiday – Portugal (Algarve coast & Lisbon) with the whole family and friends"
LONG_NAME = "family photo with grandma and grandpa at the lake house on the last evening of the trip 1096.jpg"


@pytest.fixture
def settings(tmp_path):
    return AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))


@pytest.fixture
def sample(library, photo_dir):
    write_jpeg(photo_dir / LONG_FOLDER / LONG_NAME, (90, 120, 200), (64, 48), seed=99)
    write_jpeg(photo_dir / "trips" / "IMG_1001.jpg", (20, 120, 60), (64, 48), seed=98)
    info = build_library(library, photo_dir, count=40, model_every=1, human_every=7, bad_files=1)
    return library, info


@pytest.fixture
def window(qtbot, sample, settings):
    library, _info = sample
    yield from review_window(qtbot, library, settings)


def image_id_of(library, rel_suffix: str) -> int:
    with library.db.read() as session:
        ids = queries.filtered_ids(session, ImageFilter())
        rows = view_rows.fetch_rows(session, ids)
    return next(i for i, row in rows.items() if row.rel_path.endswith(rel_suffix))


def columns(win) -> int:
    """How many cells the grid's first row holds."""
    first = win.grid.visualRect(win.model.index(0, 0))
    return sum(
        1 for r in range(min(win.model.rowCount(), 30))
        if win.grid.visualRect(win.model.index(r, 0)).top() == first.top()
    )


def in_viewport(win) -> bool:
    rect = win.grid.visualRect(win.grid.currentIndex())
    return win.grid.viewport().rect().contains(rect.center()) and rect.height() > 0


def search(qtbot, win, text: str) -> int:
    with qtbot.waitSignal(win.ids_loaded, timeout=WAIT) as blocker:
        win.filter_bar.search.setText(text)
        win.filter_bar.flush()
    return blocker.args[0]


# -- item 3: a layout that never moves ------------------------------------------------------------


def test_long_path_changes_no_width_and_no_grid_columns(qtbot, window, sample):
    library, _info = sample
    qtbot.wait(50)
    width, panel_width, cols = window.width(), window.panel.width(), columns(window)
    long_id = image_id_of(library, LONG_NAME)
    assert len(f"{LONG_FOLDER}/{LONG_NAME}") > 180
    for image_id in (long_id, window.model.image_id(0), long_id):
        assert window.image_review.go_to_image(image_id)
        qtbot.wait(30)
        assert window.width() == width
        assert window.panel.width() == panel_width
        assert columns(window) == cols
    title = window.panel.title
    assert title.full_text().endswith(LONG_NAME)
    # The tooltip wraps (rich text, breakable after "/", "_" and "-") instead of running off the screen.
    from PySide6.QtGui import QTextDocumentFragment

    plain = QTextDocumentFragment.fromHtml(title.toolTip()).toPlainText().replace("\u200b", "")
    assert "…" in title.shown_text() and plain.endswith(LONG_NAME) and title.toolTip().startswith("<p>")


def test_grid_columns_fill_the_width(qtbot, window, sample):
    """Whole columns share the width: the margins left and right of the grid are equal (no empty band)."""
    cell = window.delegate.cell_size(window.grid.fontMetrics())
    for width in (window.width(), window.width() - 200, window.width()):  # also after a narrower window
        window.resize(width, window.height())
        qtbot.wait(50)
        viewport = window.grid.viewport().width()
        cols = columns(window)
        assert cols == viewport // (cell.width() + 4)
        first = window.grid.visualRect(window.model.index(0, 0))
        last = window.grid.visualRect(window.model.index(cols - 1, 0))
        right_margin = viewport - 1 - last.right()
        assert abs(first.left() - right_margin) <= cols, (first, last, viewport)


def test_current_stays_in_view_after_accept_and_edit_and_next(qtbot, window, sample):
    library, _info = sample
    window.filter_bar.set_review_queue(True)
    qtbot.waitUntil(lambda: window.filter_bar.review_progress_text().startswith("0 of"), timeout=WAIT)
    for _ in range(14):
        window.image_review.accept_and_next()
        qtbot.wait(5)
        assert in_viewport(window)
    for n in range(6):
        window.panel.editor.setPlainText(f"checked by hand {n}")
        window.image_review.edit_and_next()
        qtbot.wait(5)
        assert in_viewport(window)
    qtbot.waitUntil(lambda: window.filter_bar.review_progress_text().startswith("20 of"), timeout=WAIT)


def test_thumbnail_names_elide_with_an_ellipsis(window):
    metrics = window.grid.fontMetrics()
    lines = wrap_lines(LONG_NAME.replace(" ", "_"), metrics, 120, 2)
    assert len(lines) == 2
    assert lines[1].endswith("…")
    assert all(metrics.horizontalAdvance(line) <= 120 for line in lines)
    assert wrap_lines("a cat", metrics, 120, 2) == ["a cat"]


# -- item 4: review semantics -----------------------------------------------------------------------


def test_ctrl_z_right_after_save_and_next_restores_the_caption(qtbot, window, sample):
    library, info = sample
    window.image_review.go_to_image(info["ids"][0])  # a readable photo (by file name, the broken file comes first)
    first = window.image_review.current_image_id()
    before = current(library, first)
    window.panel.editor.setFocus()
    window.panel.editor.setPlainText("a person's better words")
    qtbot.keyClick(window.panel.editor, Qt.Key.Key_Return,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert window.image_review.current_image_id() != first
    assert current(library, first).text == "a person's better words"
    assert window.panel.editor.hasFocus()
    qtbot.keyClick(window.panel.editor, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    restored = current(library, first)
    assert restored.id == before.id and restored.text == before.text
    assert window.image_review.current_image_id() == first  # it shows the image that changed
    assert window.panel.editor.toPlainText() == before.text
    assert "Undone" in window.statusBar().currentMessage()


def test_find_replace_keeps_model_captions_unverified(qtbot, window, sample):
    library, info = sample
    with library.db.read() as session:
        preview_candidates = queries.find_replace_candidates(session, ImageFilter(), "beach")
    model_hits = [c for c in preview_candidates if current(library, c[0]).source == "model"]
    human_hits = [c for c in preview_candidates if current(library, c[0]).source == "human"]
    assert model_hits
    dialog = FindReplaceDialog(window.model.rowCount(), window.image_review.replacement_preview, window)
    dialog.find.setText("beach")
    dialog.replacement.setText("seaside")
    dialog.update_preview()
    assert len(dialog.matches) == len(preview_candidates)
    assert dialog.replace_button.text() == f"Replace all ({len(preview_candidates)})"
    assert dialog.preview_list.topLevelItemCount() == len(preview_candidates)
    assert not dialog.verify.isChecked()
    dialog.deleteLater()

    count = window.image_review.find_replace("beach", "seaside")
    assert count == len(preview_candidates)
    with library.db.read() as session:
        queue = set(queries.filtered_ids(session, review_queue_filter()))
    for image_id, _caption_id, _text in model_hits:
        caption = current(library, image_id)
        assert caption.source == "model" and "seaside" in caption.text
        assert caption.provenance.bulk_replace == BulkReplace("beach", "seaside")
        assert image_id in queue
    for image_id, _caption_id, _text in human_hits:
        assert current(library, image_id).source == "human"
    # Undo brings the model's own words back; with "mark as verified" they become a person's.
    window.caption_undo.undo_stack.undo()
    assert "beach" in current(library, model_hits[0][0]).text
    window.image_review.find_replace("beach", "seaside", verified=True)
    assert current(library, model_hits[0][0]).source == "human"
    details_id = model_hits[0][0]
    window.image_review.go_to_image(details_id)
    history = window.panel.history
    by = [history.topLevelItem(i).text(1) for i in range(history.topLevelItemCount())]
    assert by[0] == "person, replaced"


def test_ctrl_z_after_replace_all_undoes_it_and_the_models_caption_stays_the_models(qtbot, window, sample):
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    library, _info = sample
    with library.db.read() as session:
        hits = [c for c in queries.find_replace_candidates(session, ImageFilter(), "beach")
                if current(library, c[0]).source == "model"]
    image_id, model_caption_id, model_words = hits[0]
    search(qtbot, window, "beach")  # the search box has focus and an undo history of its own
    window.filter_bar.search.setFocus()
    window.image_review.go_to_image(image_id)

    def fill_and_replace():
        dialog = QApplication.activeModalWidget()
        dialog.find.setText("beach")
        dialog.replacement.setText("seaside")
        dialog.update_preview()
        dialog.accept()

    QTimer.singleShot(0, fill_and_replace)
    window.image_review.open_find_replace()
    assert "seaside" in current(library, image_id).text
    assert "Ctrl+Z to undo" in window.statusBar().currentMessage()
    # The key goes where the window's focus is once the dialog has closed.
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=2000)
    assert window.focusWidget() is not window.filter_bar.search
    qtbot.keyClick(window.focusWidget(), Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert current(library, image_id).id == model_caption_id  # the replace was undone ...
    assert window.filter_bar.search.text() == "beach"  # ... not the search
    # "Model's caption" is what the model wrote, not the undone replacement, and
    # "Use model's caption" has nothing else to bring back.
    window.image_review.go_to_image(image_id)
    assert window.panel.model_text.text() == model_words
    assert not window.panel.use_model_button.isEnabled()
    # With the replacement kept, the model's own words are still the ones offered.
    window.image_review.find_replace("beach", "seaside")
    window.image_review.go_to_image(image_id)
    assert window.panel.model_text.text() == model_words
    window.panel.use_model_button.click()
    qtbot.waitUntil(lambda: current(library, image_id).text == model_words, timeout=WAIT)


def test_history_says_written_edited_accepted(qtbot, window, sample):
    library, info = sample
    image_id = info["ids"][1]  # a model caption
    window.image_review.go_to_image(image_id)
    window.image_review.accept_current()
    window.panel.editor.setPlainText("a sharper caption")
    window.image_review.save_caption()
    history = window.panel.history
    by = [history.topLevelItem(i).text(1) for i in range(history.topLevelItemCount())]
    assert by[:2] == ["person, edited", "person, accepted"]
    assert history.topLevelItem(2).text(2).endswith("%")  # the model row's confidence


def test_history_rows_show_whole_captions_wrapped(qtbot, window, sample):
    library, info = sample
    image_id = info["ids"][1]
    long_words = " ".join(f"word{n}" for n in range(40))
    window.image_review.go_to_image(image_id)
    for n in range(5):
        window.panel.editor.setPlainText(f"{n} {long_words}")
        window.image_review.save_caption()
    history = window.panel.history
    qtbot.waitUntil(lambda: history.topLevelItemCount() >= 6, timeout=WAIT)
    first = history.topLevelItem(0)
    assert first.text(3) == f"4 {long_words}"  # the whole text, not a cut copy
    line = history.fontMetrics().lineSpacing()
    row_height = history.visualItemRect(first).height()
    caption_width = history.columnWidth(3)
    needed = history.fontMetrics().horizontalAdvance(first.text(3))
    assert needed > caption_width  # longer than its column ...
    assert row_height >= 2 * line  # ... so it wraps onto more lines instead of being elided


def test_review_queue_opens_on_least_confident(qtbot, window, sample):
    library, _info = sample
    window.image_review.go_to_row(3)
    with qtbot.waitSignal(window.ids_loaded, timeout=WAIT):
        window.image_review.toggle_review_queue()
    with library.db.read() as session:
        worst = queries.least_confident(session, ImageFilter())
    assert window.image_review.current_image_id() == worst
    qtbot.waitUntil(lambda: window.filter_bar.review_progress_text() == f"0 of {window.model.rowCount()} reviewed",
                    timeout=WAIT)
    window.image_review.accept_and_next()
    qtbot.waitUntil(lambda: window.filter_bar.review_progress_text() == f"1 of {window.model.rowCount()} reviewed",
                    timeout=WAIT)


# -- item 8: search, broken files, empty captions ---------------------------------------------------


def test_search_finds_file_and_folder_names_and_says_no_matches(qtbot, window, sample):
    library, _info = sample
    assert search(qtbot, window, "IMG_1001") == 1
    assert window.model.row_data(0).name == "IMG_1001.jpg"
    n_beach = search(qtbot, window, "beach/img")
    assert n_beach == 20 and all(window.model.row_data(r).rel_path.startswith("beach/") for r in range(n_beach))
    assert search(qtbot, window, "Portugal lisbon") == 1
    assert not window.filter_bar.no_matches.isVisible()
    assert search(qtbot, window, "zebra crossing") == 0
    assert window.filter_bar.no_matches.isVisible()
    assert "zebra crossing" in window.filter_bar.no_matches_label.text()
    with qtbot.waitSignal(window.ids_loaded, timeout=WAIT):
        window.filter_bar.clear_filters()
    assert window.model.rowCount() > 40 and not window.filter_bar.no_matches.isVisible()


def test_show_all_photos_clears_only_the_search(qtbot, window, sample):
    bar = window.filter_bar
    with qtbot.waitSignal(window.ids_loaded, timeout=WAIT):
        bar.set_review_queue(True)
    sort, state = bar.sort.currentData(), bar.state.currentIndex()
    window.image_review.go_to_row(2)
    place = window.image_review.current_image_id()
    assert search(qtbot, window, "zebra crossing") == 0 and bar.no_matches.isVisible()
    clear = next(b for b in bar.no_matches.findChildren(QToolButton) if b.text() == "Show all photos")
    with qtbot.waitSignal(window.ids_loaded, timeout=WAIT):
        clear.click()
    assert bar.search.text() == "" and not bar.no_matches.isVisible()
    assert bar.review.isChecked() and bar.sort.currentData() == sort and bar.state.currentIndex() == state
    assert window.image_review.current_image_id() == place


def test_filter_bar_keeps_its_geometry_as_the_review_count_grows(qtbot, window):
    bar = window.filter_bar
    for width in (1024, 1280):
        window.resize(width, 700)
        qtbot.waitUntil(lambda width=width: window.width() == width, timeout=WAIT)
        bar.review.setChecked(False)
        QApplication.processEvents()
        off = (bar.search.geometry(), bar.review.geometry())
        bar.review.setChecked(True)
        for done, total in ((9, 9), (10, 10), (100, 100), (10000, 10000)):
            bar.review.setText(f"{done} of {total} reviewed")
            QApplication.processEvents()
            assert (bar.search.geometry(), bar.review.geometry()) == off
            assert bar.review.width() >= bar.review.sizeHint().width()  # the count is never cut
        assert bar.search.width() >= 100


def test_broken_file_disables_editor_and_empty_caption_is_an_inline_note(qtbot, window, sample, monkeypatch):
    library, _info = sample
    shown: list[str] = []
    monkeypatch.setattr(QMessageBox, "open", lambda self: shown.append(self.text()))
    window.image_review.go_to_image(image_id_of(library, "broken_0.jpg"))
    assert not window.panel.editor.isEnabled()
    window.image_review.go_to_row(0)
    assert window.panel.editor.isEnabled()
    window.panel.editor.setPlainText("   ")
    window.image_review.save_caption()
    assert window.panel.message.isVisible() and "empty" in window.panel.message.text()
    assert not shown


# -- item 5: people's words for numbers ------------------------------------------------------------


def test_confidence_is_a_percentage(window, sample):
    assert format_confidence(math.log(0.87)) == "87%"
    assert format_confidence(-3.25) == "4%"
    assert format_confidence(-9.0) == "<1%"
    assert format_confidence(None) == ""
    assert score_for_percent(50) == pytest.approx(math.log(0.5))
    row = window.model.row_data(0)
    if row.state == "model":
        assert badge_text(row)[0] == f"model {format_confidence(row.score)}"
    bar = window.filter_bar
    assert bar.min_score.text() == "any" and bar.max_score.text() == "any"
    bar.min_score.setValue(50)
    assert bar.filter().min_score == pytest.approx(math.log(0.5))
    assert bar.filter().max_score is None


def test_confidence_filter_and_sort_agree_with_percentages(qtbot, window, sample):
    library, _info = sample
    with qtbot.waitSignal(window.ids_loaded, timeout=WAIT):
        window.filter_bar.min_score.setValue(30)
        window.filter_bar.flush()
    scores = [window.model.row_data(r).score for r in range(window.model.rowCount())]
    assert scores and all(s is not None and 100 * math.exp(s) >= 30 for s in scores)


def test_provenance_reads_as_lines_without_duplicates(sample):
    library, info = sample
    settings = {
        "generation": {"num_beams": 3, "max_new_tokens": 30, "prompt": None},
        "identity": {"model": "/tmp/tmpab12/snapshot", "device": "cpu", "dtype": "float32"},
        "device": "cpu",
        "dtype": "torch.float32",
    }
    with library.db.write() as session:
        add_model_caption(session, info["ids"][2], "a dog", model_name="Salesforce/blip-image-captioning-base",
                          provenance=settings, score=math.log(0.8))
    with library.db.read() as session:
        details = view_rows.caption_details(session, info["ids"][2])
    lines = details.latest_model.provenance_lines()
    text = "\n".join(lines)
    assert "Model: Salesforce/blip-image-captioning-base" in lines
    assert "Device: cpu, float32" in lines
    assert "Decoding: 3 beams, up to 30 tokens" in lines
    assert any(line.startswith("Confidence: 80%") for line in lines)
    assert any(line.startswith("Date: ") for line in lines)
    assert "/tmp/" not in text and text.count("cpu") == 1 and "torch." not in text
    # Quantized to int8 after a float32 load: provenance says int8, as the status bar did.
    settings["identity"] = {**settings["identity"], "optimizations": ["sdpa", "int8"]}
    with library.db.write() as session:
        add_model_caption(session, info["ids"][2], "a dog again", model_name="Salesforce/blip-image-captioning-base",
                          provenance=settings, score=math.log(0.8))
    with library.db.read() as session:
        assert "Device: cpu, int8" in view_rows.caption_details(session, info["ids"][2]).latest_model.provenance_lines()
    # The OpenVINO runtime is named beside the device and precision.
    settings["identity"] = {**settings["identity"], "runtime": "openvino", "optimizations": ["openvino", "int8"]}
    assert "Device: cpu, int8, OpenVINO" in provenance_lines(
        source="model", model_name="m", adapter=None, provenance=Provenance.from_json(settings), score=None, origin=None,
        created_at=None)
    assert provenance_lines(source="human", model_name=None, adapter=None, provenance=None, score=None,
                            origin=None, created_at=None, action="edited by a person") == ["Edited by a person"]


def test_sidebar_names_are_readable(window):
    tree = window.sidebar.tree
    assert tree.columnCount() == 2
    root = tree.topLevelItem(1)
    assert "photos" in root.toolTip(0) and "to review" in root.toolTip(0)
    assert tree.header().sectionSize(0) > tree.width() * 0.6
