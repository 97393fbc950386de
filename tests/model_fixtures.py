"""Session-scoped pytest fixtures with tiny offline captioning models.

Import the fixtures you need explicitly in a test module, e.g.::

    from tests.model_fixtures import tiny_blip_dir, trained_blip_dir  # noqa: F401

(``tests/conftest.py`` is owned by the app tests and stays model-free, so
collecting the GUI/store tests never builds models.)  Every model is built
once per session into ``tmp_path_factory`` and must not be modified by tests;
copy it first if a test needs to break it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests import tiny_models

#: fixture/family name -> builder; ``tiny_model_dir`` is parametrized over these.
BUILDERS: dict[str, Callable[[Path], Path]] = {
    "blip": tiny_models.build_tiny_blip,
    "blip2": tiny_models.build_tiny_blip2,
    "git": tiny_models.build_tiny_git,
    "vision_encoder_decoder": tiny_models.build_tiny_vision_encoder_decoder,
    "florence2": tiny_models.build_tiny_florence2,
    "llava": tiny_models.build_tiny_llava,
}


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """All tiny random models, built lazily on first access of each name."""

    class _Lazy(dict[str, Path]):
        def __missing__(self, name: str) -> Path:
            folder = tmp_path_factory.mktemp(f"tiny-{name}")
            self[name] = BUILDERS[name](folder)
            return self[name]

    return _Lazy()


@pytest.fixture(scope="session")
def tiny_blip_dir(tiny_model_dirs: dict[str, Path]) -> Path:
    """Folder with a tiny random BLIP (``BlipForConditionalGeneration``)."""
    return tiny_model_dirs["blip"]


@pytest.fixture(scope="session")
def trained_blip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny BLIP fine-tuned on coloured shapes (captions like ``"a red circle"``); ~10 s to build."""
    return tiny_models.train_tiny_blip(tmp_path_factory.mktemp("trained-blip"))
