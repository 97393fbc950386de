"""The family's measured LoRA defaults learn a restyle task with no tuning flags.

``captiondesk train --method lora`` with only ``--epochs`` set retrains a pre-trained
tiny BLIP (tests/restyle_scenario.py: 32 distinct captions, style A -> style B) and must
reach >= 0.9 held-out exact match.  The old defaults (r 8 on query/value, lr 1e-4)
reached 0.0 on this task (README "LoRA defaults"; benchmarks/lora_defaults.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from captiondesk.cli import main
from core.captioning import get_family
from core.library import Library
from core.training import versions
from tests import restyle_scenario


@pytest.mark.slow
def test_default_lora_settings_learn_a_restyle(tmp_path: Path, capsys) -> None:
    base = restyle_scenario.pretrain_style_a(tmp_path / "style-a", steps=200, n=480)
    library, _ = restyle_scenario.restyle_library(tmp_path / "lib", n=320)
    library.close()
    code = main(["--library", str(tmp_path / "lib" / "library.db"), "train", "--base", str(base),
                 "--name", "restyled", "--method", "lora", "--epochs", "8"])
    assert code == 0, capsys.readouterr()
    library = Library(tmp_path / "lib" / "library.db")
    try:
        version = versions.get_version(library, "restyled")
        defaults = get_family("blip").lora_defaults
        assert (version.config["lora_r"], version.config["lr"]) == (defaults["r"], defaults["lr"])
        assert version.metrics["base"]["exact_match"] == 0.0
        assert version.metrics["trained"]["exact_match"] >= 0.9, version.metrics["history"]
    finally:
        library.close()
