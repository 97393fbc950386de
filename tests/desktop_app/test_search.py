"""The window's search by meaning (filter bar mode, background index) and "Find similar" on the grid."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PySide6.QtWidgets import QMenu
from sqlalchemy import select

from core import captions
from core.library import Library
from core.models import Image
from desktop_app.photo_menu import PhotoVerbs, photo_context_menu
from tests.support.gui_fakes import FakeEngine
from tests.support.search_helpers import build_tiny_clip, picture
from tests.support.window_helpers import WAIT, make_window

#: Set to a folder to keep the screenshots (the README's come from here).
SHOTS = os.environ.get("CAPTIONDESK_SEARCH_SHOTS")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip"))


@pytest.fixture
def captioned(library: Library, photo_dir: Path) -> dict[str, int]:
    texts = {"beach.jpg": "a puppy running along the beach", "ramen.jpg": "a bowl of ramen with a boiled egg",
             "car.jpg": "a red sports car in front of a garage", "light.jpg": "a lighthouse on a rocky coast"}
    colours = {"beach.jpg": (230, 200, 120), "ramen.jpg": (240, 230, 200), "car.jpg": (200, 20, 20),
               "light.jpg": (40, 60, 160)}
    for name, colour in colours.items():
        picture(photo_dir / name, colour)
    picture(photo_dir / "car again.jpg", (200, 20, 20))  # uncaptioned, looks like car.jpg
    library.scan([library.add_root(photo_dir).id])
    with library.db.write() as session:
        ids = {r: i for i, r in session.execute(select(Image.id, Image.rel_path))}
        for name, text in texts.items():
            captions.add_model_caption(session, ids[name], text, model_name="tiny")
    return ids


def _shot(win, name: str, tmp_path: Path) -> None:  # noqa: ANN001
    folder = Path(SHOTS) if SHOTS else tmp_path
    assert win.grab().save(str(folder / name))


def test_search_by_meaning_indexes_in_the_background_and_ranks_the_grid(
        qtbot, library: Library, settings, captioned: dict[str, int], tmp_path: Path) -> None:  # noqa: ANN001
    win = make_window(qtbot, library, settings, FakeEngine())
    assert win.model.rowCount() == 5
    win.filter_bar.search.setText("dog on the sand")
    with qtbot.waitSignal(win.ids_loaded, timeout=WAIT):
        win.filter_bar._emit_now()
    assert win.model.rowCount() == 0  # words: no caption holds them
    with qtbot.waitSignal(win.search_index.finished, timeout=180_000) as indexed:
        win.filter_bar.set_meaning("text")
    assert indexed.args[0] == "text" and indexed.args[1].embedded == 4
    qtbot.waitUntil(lambda: win.model.rowCount() == 4, timeout=WAIT)
    assert win.model.image_id(0) == captioned["beach.jpg"]
    assert not win.search_status.isVisible()
    _shot(win, "search-by-meaning.png", tmp_path)

    # A caption edit re-indexes that one text in the background, and the ranking follows.
    with qtbot.waitSignal(win.search_index.finished, timeout=180_000) as again:
        with library.db.write() as session:
            captions.set_human_caption(session, captioned["ramen.jpg"], "a dog digging on the shore")
        from desktop_app.operations import LibraryChanges

        win.notifier.notify(LibraryChanges.of_captions([captioned["ramen.jpg"]]))
    assert again.args[1].embedded == 1
    qtbot.waitUntil(lambda: win.model.image_id(0) in (captioned["ramen.jpg"], captioned["beach.jpg"])
                    and win.model.image_id(1) in (captioned["ramen.jpg"], captioned["beach.jpg"]), timeout=WAIT)


def test_find_similar_from_the_photo_menu(qtbot, library: Library, settings, captioned: dict[str, int],  # noqa: ANN001
                                          tiny_clip: str, tmp_path: Path) -> None:
    win = make_window(qtbot, library, settings, FakeEngine())
    win.grid_content.search_models["image"] = tiny_clip
    row = win.model.row_of(captioned["car.jpg"])
    asked = []
    menu = photo_context_menu(win.grid, captioned["car.jpg"], "car.jpg", PhotoVerbs(find_similar=lambda *a: asked.append(a)))
    assert isinstance(menu, QMenu) and [a.text() for a in menu.actions()] == ["Find similar"]
    menu.actions()[0].trigger()
    assert asked == [(captioned["car.jpg"], "car.jpg")]

    with qtbot.waitSignal(win.ids_loaded, timeout=180_000):
        win.search_index.find_similar(captioned["car.jpg"], win.model.row_data(row).name)
    ids = [win.model.image_id(r) for r in range(win.model.rowCount())]
    assert ids[:2] == [captioned["car.jpg"], captioned["car again.jpg"]]  # itself, then its look-alike
    assert sorted(ids) == sorted(captioned.values())  # uncaptioned ones too
    assert win.image_review.current_image_id() == captioned["car.jpg"]
    assert win.filter_bar.similar_note.isVisible() and "car.jpg" in win.filter_bar.similar_label.text()
    _shot(win, "find-similar.png", tmp_path)

    with qtbot.waitSignal(win.ids_loaded, timeout=WAIT):
        win.filter_bar.similar_back.click()
    assert not win.filter_bar.similar_note.isVisible() and win.model.rowCount() == 5
