"""GUI operations: a write op's one change notice refreshes each view once; controllers
never import the window; user-facing errors are known by their class, not their name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core import edits
from desktop_app.operations import LibraryChanges, WriteOp
from tests.support.gui_fakes import FakeEngine, build_library
from tests.support.paths import REPO_ROOT
from tests.support.window_helpers import current, make_window

WAIT = 10_000
ROOT = REPO_ROOT


@pytest.fixture
def window(qtbot, library, photo_dir, settings):
    build_library(library, photo_dir, count=6, model_every=2, human_every=5, bad_files=0)
    win = make_window(qtbot, library, settings, FakeEngine())
    qtbot.waitUntil(lambda: win.image_review.current_image_id() is not None, timeout=WAIT)
    qtbot.waitUntil(lambda: not win.empty_state_visible, timeout=WAIT)  # the sidebar has its first tree
    yield win
    win.shutdown()


def counting(monkeypatch, obj, name, calls):
    original = getattr(obj, name)

    def spy(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(obj, name, spy)


def test_a_write_ops_changes_reach_grid_sidebar_and_panel_through_one_notice(qtbot, monkeypatch, window):
    library = window.library
    image_id = window.image_review.current_image_id()
    notices, grid_rows, sidebar, panel = [], [], [], []
    window.notifier.library_changed.connect(notices.append)
    counting(monkeypatch, window.model, "refresh_ids", grid_rows)
    counting(monkeypatch, window.sidebar_content, "schedule_refresh", sidebar)
    counting(monkeypatch, window.image_review, "show_current", panel)
    finished = []

    op = WriteOp(lambda: edits.save_edit(library.db, image_id, "a lighthouse at dusk"),
                 lambda change: LibraryChanges.of_edits([change], edited=False), window.notifier,
                 success=finished.append)
    with qtbot.waitSignal(window.sidebar_refreshed, timeout=WAIT):
        op.run(window.pool)
    assert finished and finished[0].image_id == image_id
    assert current(library, image_id).text == "a lighthouse at dusk"
    assert [n.captions for n in notices] == [frozenset({image_id})]  # one notice
    assert grid_rows == [([image_id],)]  # the grid re-read that row, once
    assert len(sidebar) == 1  # the counts, once
    assert len(panel) == 1 and window.panel.text() == "a lighthouse at dusk"
    row = window.model.row_data(window.model.row_of(image_id))
    assert row.caption == "a lighthouse at dusk" and row.source == "human"  # the grid's row is new


def test_a_failed_write_op_announces_nothing(qtbot, window):
    notices, failures = [], []
    window.notifier.library_changed.connect(notices.append)

    def work():
        raise ValueError("no such photo")

    WriteOp(work, LibraryChanges(images=True), window.notifier, failure=failures.append).run(window.pool)
    qtbot.waitUntil(lambda: bool(failures), timeout=WAIT)
    assert str(failures[0]) == "no such photo" and notices == []


def _imported_modules(path: Path) -> set[str]:
    """Every module *path* imports, at load, lazily or under TYPE_CHECKING."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_controllers_do_not_import_the_main_window():
    controllers = sorted((ROOT / "desktop_app" / "controllers").glob("*.py"))
    assert len(controllers) >= 6
    for path in controllers:
        assert "desktop_app.main_window" not in _imported_modules(path), path.name


def test_user_facing_errors_are_known_by_class():
    from core.captioning.errors import GenerationError, ModelLoadError
    from core.errors import UserFacingError, user_message
    from core.library import LibraryError
    from core.training.versions import VersionError
    from desktop_app.model_thread import is_user_error

    for error in (ModelLoadError("Model not found.", kind="bad_model"), GenerationError("The server said no."),
                  LibraryError("Not a library."), VersionError("No such version.")):
        assert isinstance(error, UserFacingError) and is_user_error(error)
        assert user_message(error) == str(error)
    assert not is_user_error(RuntimeError("boom"))
    assert user_message(RuntimeError("boom")) == "RuntimeError: boom"
