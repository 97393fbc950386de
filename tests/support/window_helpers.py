"""Opening the main window in GUI tests (shared by test_gui_jobs, test_gui_versions, test_gui_real_model), and
reading an image's current caption back (test_gui_window, test_gui_review, test_gui_queries).

A helper module, not a test module: the ``settings`` fixture these take lives in
tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from desktop_app.main_window import MainWindow

#: Milliseconds to wait for a window signal (a whole job on a busy 2-core machine).
WAIT = 15_000


def make_window(qtbot: Any, library: Any, settings: Any, engine: Any, *, size: tuple[int, int] | None = (1300, 850)) -> MainWindow:
    """A shown MainWindow on *library* (engine None: the real captioning engine), grid loaded."""
    win = MainWindow(settings, engine=engine, error_dialogs=False)
    qtbot.addWidget(win)
    if size is not None:
        win.resize(*size)
    win.show()
    with qtbot.waitSignal(win.ids_loaded, timeout=WAIT):
        win.libraries.set_library(library)
    return win


def review_window(qtbot: Any, library: Any, settings: Any) -> Iterator[MainWindow]:
    """A fixture's body: the window at 1280x800 on a fake engine, exposed, with a photo selected;
    shut down afterwards."""
    from tests.support.gui_fakes import FakeEngine

    win = make_window(qtbot, library, settings, FakeEngine(), size=(1280, 800))
    qtbot.waitExposed(win)
    qtbot.waitUntil(lambda: win.image_review.current_image_id() is not None, timeout=WAIT)
    yield win
    win.shutdown()


def uncaptioned_ids(window: MainWindow) -> set[int]:
    """Ids of the grid rows shown as uncaptioned."""
    return {
        window.model.image_id(r)
        for r in range(window.model.rowCount())
        if window.model.row_data(r).state == "uncaptioned"
    }


def current(library: Any, image_id: int) -> Any:
    """The current caption row of *image_id* (None when it has none), read in its own session."""
    from core.captions import current_caption

    with library.db.read() as session:
        return current_caption(session, image_id)
