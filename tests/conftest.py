"""Shared test setup: headless Qt, no network for Hugging Face, shared fixtures.

Shared fixtures live here or in helper modules registered below; helper modules that are
imported by tests (tests/support/gui_fakes.py, tests/support/window_helpers.py, tests/support/library_helpers.py,
tests/support/training_scenario.py, tests/support/imagegen.py) have no ``test_`` prefix, so a test module
never imports another test module.
"""

from __future__ import annotations

import os

# Before anything imports Qt or huggingface_hub.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from core.library import Library  # noqa: E402

#: The tiny-model fixtures (tiny_model_dirs, tiny_blip_dir, trained_blip_dir) for every test,
#: models built on first use only; the fake model server (``server``), and no API key from
#: the environment in any test.
pytest_plugins = ["tests.support.model_fixtures", "tests.support.server_fixtures"]


@pytest.fixture
def library(tmp_path: Path):
    lib = Library(tmp_path / "library.db")
    yield lib
    lib.close()


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    return folder


@pytest.fixture
def settings(tmp_path: Path):
    """The desktop app's settings in a temporary ini file (never the user's real ones)."""
    from PySide6.QtCore import QSettings

    from desktop_app.app_settings import AppSettings

    return AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))


#: Markers by folder, so ``pytest -m "not gui"`` or ``-m model`` selects by what a test touches
#: (a folder's tests are also what ``pytest tests/core/captioning`` runs after a change there).
FOLDER_MARKERS = {
    "desktop_app": "gui",
    "captioning": "model",
    "training": "model",
    "restyle": "model",
    "search": "model",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_root = Path(__file__).resolve().parent
    for item in items:
        folders = Path(item.fspath).resolve().relative_to(tests_root).parts[:-1]
        for folder in folders:
            marker = FOLDER_MARKERS.get(folder)
            if marker is not None:
                item.add_marker(marker)
