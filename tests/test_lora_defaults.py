"""The family's measured LoRA defaults learn a restyle task with no tuning flags.

``captiondesk train --method lora`` with only ``--epochs`` set retrains a pre-trained
tiny BLIP (tests/restyle_scenario.py: 32 distinct captions, style A -> style B) and must
reach >= 0.9 held-out exact match.  The old defaults (r 8 on query/value, lr 1e-4)
reached 0.0 on this task (README "LoRA defaults"; benchmarks/lora_defaults.py).

The vision-language families' defaults are what the train dialog shows for a base model of
that family (their LoRA restyle is tested in tests/test_training_vlm_families.py).
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


@pytest.mark.parametrize("model_type", ["llava", "qwen2_vl", "idefics3", "smolvlm", "paligemma", "florence2"])
def test_train_dialog_shows_a_vlm_familys_defaults(qtbot, library, tmp_path: Path, model_type: str) -> None:
    """A VLM base model (family read from its config.json, nothing loaded) shows its family's rank and
    rate in the dialog's measured-defaults fields, and the rate is one for real checkpoints: the tiny
    models' optimum (1e-2, README "LoRA defaults") would wreck a 2-8B LoRA run."""
    from core.captioning.registry import family_hint
    from desktop_app.train_dialog import TrainDialog

    folder = tmp_path / model_type
    folder.mkdir()
    (folder / "config.json").write_text(f'{{"model_type": "{model_type}"}}', encoding="utf-8")
    family = family_hint(folder)
    defaults = family.lora_defaults
    dialog = TrainDialog(library, base_model=str(folder), train_fn=lambda *a, **k: None)
    qtbot.addWidget(dialog)
    assert dialog.family_defaults.isChecked() and f"{family.id} family" in dialog.family_defaults.toolTip()
    assert (dialog.lora_r.value(), dialog.lora_alpha.value(), dialog.lr.value()) == \
        (defaults["r"], defaults["alpha"], defaults["lr"]) == (16, 32, 2e-4)
    assert dialog.config().lr is None  # resolved from the family when the model loads
