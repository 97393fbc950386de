"""Session-scoped pytest fixtures with tiny offline captioning models.

tests/conftest.py registers this module as a plugin (``pytest_plugins``), so every test
can ask for these fixtures by name.  ``tests.tiny_models`` (and with it torch) is only
imported when a model is first built, so collecting the GUI/store tests stays model-free.
Every model is built once per session into ``tmp_path_factory`` and must not be modified
by tests; copy it first if a test needs to break it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


def _builder(function_name: str) -> Callable[[Path], Path]:
    """``tests.tiny_models.<function_name>``, imported on first call (it imports torch)."""

    def build(folder: Path) -> Path:
        from tests import tiny_models

        return getattr(tiny_models, function_name)(folder)

    build.__name__ = function_name
    return build


#: fixture/family name -> builder; ``tiny_model_dir`` is parametrized over these.
BUILDERS: dict[str, Callable[[Path], Path]] = {
    "blip": _builder("build_tiny_blip"),
    "blip2": _builder("build_tiny_blip2"),
    "git": _builder("build_tiny_git"),
    "vision_encoder_decoder": _builder("build_tiny_vision_encoder_decoder"),
    "florence2": _builder("build_tiny_florence2"),
    "llava": _builder("build_tiny_llava"),
    "idefics3": _builder("build_tiny_idefics3"),
    "qwen2_vl": _builder("build_tiny_qwen2_vl"),
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
    return _builder("train_tiny_blip")(tmp_path_factory.mktemp("trained-blip"))
