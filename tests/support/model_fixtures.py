"""Session-scoped pytest fixtures with tiny offline captioning models.

tests/conftest.py registers this module as a plugin (``pytest_plugins``), so every test
can ask for these fixtures by name.  ``tests.support.tiny_models`` (and with it torch) is only
imported when a model is first built, so collecting the GUI/store tests stays model-free.
Every model is built once per session into ``tmp_path_factory`` and must not be modified
by tests; copy it first if a test needs to break it.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def _builder(function_name: str) -> Callable[[Path], Path]:
    """``tests.support.tiny_models.<function_name>``, imported on first call (it imports torch)."""

    def build(folder: Path) -> Path:
        from tests.support import tiny_models

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


@pytest.fixture(scope="session")
def style_a_blip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The restyle scenario's base: a tiny BLIP pre-trained on style A (tests/support/restyle_scenario.py)."""
    from tests.support import restyle_scenario

    return restyle_scenario.pretrain_style_a(tmp_path_factory.mktemp("style-a") / "style-a", steps=200, n=480)


@pytest.fixture(scope="session")
def metric_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random models for the model-based metrics: ``roberta`` (BERTScore), ``clip`` (CLIPScore)."""
    root = tmp_path_factory.mktemp("metric-models")
    return {"roberta": _builder("build_tiny_roberta")(root / "roberta"),
            "clip": _builder("build_tiny_clip")(root / "clip")}


# -- a tiny text model and a restyler trained on it --------------------------------------------

#: The style prompt the shared restyler ``house-style`` was trained with.
RESTYLE_STYLE = "Restyle."


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a tiny random causal LM (Llama) and its tokenizer, with a chat template."""
    from tests.support.tiny_text_models import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm"))


@dataclass
class TrainedRestyler:
    """A library of (model caption → verified caption) pairs and its full restyler ``house-style``,
    trained on them; ``expected`` is ``{image id: styled text}`` of the images without a pair."""

    library: Any
    db: str
    expected: dict[int, str]
    train_output: dict[str, Any]


@pytest.fixture(scope="session")
def house_style(tmp_path_factory: pytest.TempPathFactory, tiny_lm_dir: Path) -> Iterator[TrainedRestyler]:
    """``train --restyler`` once, through the command line, on the deterministic restyle task (~30 s).

    It learns the task (the learning test in tests/core/restyle/test_restyle.py checks); tests may restyle
    with it and activate it, but must not retrain, rename or delete it."""
    import torch

    from tests.support.library_helpers import run_cli
    from tests.support.tiny_text_models import make_pair_library

    tmp_path = tmp_path_factory.mktemp("house-style")
    library, expected = make_pair_library(tmp_path / "lib.db", tmp_path / "photos")
    db = str(tmp_path / "lib.db")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-wide model's matrices are too small to share between threads
    out = io.StringIO()
    try:
        with pytest.MonkeyPatch.context() as monkeypatch, warnings.catch_warnings(), redirect_stdout(out):
            warnings.simplefilter("ignore", UserWarning)
            code = run_cli(["--library", db, "train", "--restyler", "--base", str(tiny_lm_dir), "--name",
                            "house-style", "--style", RESTYLE_STYLE, "--method", "full", "--lr", "5e-3",
                            "--epochs", "30", "--batch-size", "8", "--patience", "0", "--device", "cpu", "--json"],
                           monkeypatch)
    finally:
        torch.set_num_threads(threads)
    trained = TrainedRestyler(library, db, expected, json.loads(out.getvalue()))
    assert code == 0, trained.train_output
    yield trained
    library.close()
