"""With no tuning flags, training learns a restyle task: the family's measured LoRA settings
and a learning rate the range test chose on the library's own photos.

``captiondesk train --method lora|full`` with only ``--epochs`` set retrains a pre-trained
tiny BLIP (tests/support/restyle_scenario.py: 32 distinct captions, style A -> style B) and must
reach >= 0.9 held-out exact match.  The old defaults (r 8 on query/value, lr 1e-4) reached
0.0 on this task (README "LoRA defaults"; benchmarks/lora_defaults.py), and full
fine-tuning at the old fixed 2e-5 learned nothing.  The range test's choice, its curve and
the note about the published range are printed and stored with the version.

The vision-language families' defaults are what the train dialog shows for a base model of
that family (their LoRA restyle is tested in tests/core/training/test_training_vlm_families.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from captiondesk.cli import main
from core.captioning import get_family
from core.library import Library
from core.training import versions
from tests.support import restyle_scenario


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "full"])
def test_no_tuning_flags_learn_a_restyle_through_the_range_test(style_a_blip: Path, tmp_path: Path, capsys,
                                                                method: str) -> None:
    library, _ = restyle_scenario.restyle_library(tmp_path / "lib", n=320)
    library.close()
    code = main(["--library", str(tmp_path / "lib" / "library.db"), "train", "--base", str(style_a_blip),
                 "--name", "restyled", "--method", method, "--epochs", "8"])
    out = capsys.readouterr().out
    assert code == 0, out
    library = Library(tmp_path / "lib" / "library.db")
    try:
        version = versions.get_version(library, "restyled")
        if method == "lora":
            assert version.config["lora_r"] == get_family("blip").lora_defaults["r"]
        found = version.config["lr_range"]
        # The run trained at the range test's choice, and the version keeps its curve and the published range.
        assert version.config["lr"] == found["lr"] and found["rule"] == "min/10" and len(found["curve"]) >= 20
        assert found["published"] == list(get_family("blip").published_lr[method])
        assert found["inside"] == (found["published"][0] <= found["lr"] <= found["published"][1])
        label = "full fine-tuning" if method == "full" else "LoRA"
        line = next(x for x in out.splitlines() if x.startswith("Learning rate: "))
        assert line.startswith(f"Learning rate: {found['lr']:.1e} (range test over {found['steps']} steps; "
                               f"published range for BLIP {label} is "), line
        assert line.endswith("inside it)" if found["inside"] else "outside it — check on your data, or pass --lr)")
        assert version.metrics["base"]["exact_match"] == 0.0
        assert version.metrics["trained"]["exact_match"] >= 0.9, (found["lr"], version.metrics["history"])
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
