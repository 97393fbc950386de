"""The learning-rate range test (core/training/lr_range.py).

* The pick (a tenth of the rate at the lowest loss, fastai's lr_min) and the note about the family's published range.
* On a real tiny BLIP (LoRA, full and QLoRA): the test leaves the model exactly as it found it
  (weights, and torch's random generator), returns a rising-rate curve, and a resumed run
  reads its saved choice back instead of testing again.
* End to end (slow): a run with no rate learns the restyle task of tests/support/restyle_scenario.py
  through the range test, and the version stores the choice, the curve and the note.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.captioning.families import get_family
from core.jobs import NEVER_CANCELLED
from core.training.lr_range import (
    END_LR,
    START_LR,
    LrRangeResult,
    compare_with_published,
    find_learning_rate,
    lr_note,
    suggest_lr,
)


def test_the_pick_is_a_tenth_of_the_rate_at_the_lowest_loss() -> None:
    lrs = [10 ** (-7 + 7 * i / 49) for i in range(50)]
    # Flat until 1e-4, falling until 1e-2, then blowing up.
    losses = [3.0 if lr < 1e-4 else 3.0 - np.log10(lr / 1e-4) if lr < 1e-2 else 1.0 + 10 * np.log10(lr / 1e-2)
              for lr in lrs]
    lowest = min(range(50), key=losses.__getitem__)
    assert suggest_lr(lrs, losses) == pytest.approx(lrs[lowest] / 10) and 5e-3 < lrs[lowest] < 2e-2
    assert suggest_lr(lrs, [float(i) for i in range(50)]) is None  # never falls: no pick


def test_the_note_names_the_published_range() -> None:
    blip = get_family("blip")
    span, source, inside = compare_with_published(blip, "full", 3.2e-4)
    assert (span, source, inside) == ([1e-5, 5e-5], "BLIP", False)
    test = LrRangeResult(lr=3.2e-4, rule="min/10", steps=80, curve=[], family="blip", method="full",
                         published=span, published_source=source, inside=inside)
    assert lr_note(test) == ("range test over 80 steps; published range for BLIP full fine-tuning is "
                             "1e-05–5e-05: outside it — check on your data, or pass --lr")
    llava = get_family("llava")
    span, source, inside = compare_with_published(llava, "lora", 2e-4)
    assert inside and "LLaVA-1.5 LoRA is 2e-04: inside it" in lr_note(
        LrRangeResult(lr=2e-4, rule="min/10", steps=40, curve=[], family="llava", method="lora",
                      published=span, published_source=source, inside=inside))
    # Every trainable family has a published range for every method.
    from core.captioning.families import trainable_family_ids

    for family_id in trainable_family_ids():
        assert set(get_family(family_id).published_lr) == {"full", "lora", "qlora"}, family_id


@pytest.mark.parametrize("method", ["lora", "full", pytest.param("qlora", marks=pytest.mark.slow)])
def test_the_range_test_restores_the_model_and_returns_a_curve(tiny_blip_dir: Path, tmp_path: Path,
                                                               method: str) -> None:
    import torch

    from core.training import TrainingConfig
    from core.training.examples import _Examples
    from core.training.model_setup import _load_base_captioner, _PreparedModel
    from tests.support.training_scenario import COLOURS, STYLE_B, square

    if method == "qlora":
        pytest.importorskip("bitsandbytes")
    config = TrainingConfig(method=method, batch_size=4, epochs=1, device="cpu")
    captioner = _load_base_captioner(str(tiny_blip_dir), config)  # QLoRA: the 4-bit base, as a run loads it
    try:
        family = captioner.family
        config = config.with_family_defaults(family)
        model = _PreparedModel.build(captioner, family, config)
        rng = np.random.default_rng(0)
        colours = [list(COLOURS)[i % 4] for i in range(8)]
        text = family.encode_training_batch(captioner, [STYLE_B.format(c=c) for c in colours], config.max_length)
        examples = _Examples(8, text, [square(c, rng) for c in colours], None, [], [])
        before = {n: p.detach().clone() for n, p in model.trainable.named_parameters()}
        rng_before = torch.get_rng_state()
        found = find_learning_rate(captioner, family, model, examples, config, tmp_path, lambda *a, **k: None,
                                   NEVER_CANCELLED, steps=12)
        assert found is not None
        assert all(torch.equal(p, before[n]) for n, p in model.trainable.named_parameters())
        assert all(p.grad is None for p in model.params)
        assert torch.equal(torch.get_rng_state(), rng_before)  # the real run draws what it would have
        lrs = [lr for lr, _ in found.curve]
        assert len(lrs) == found.steps and 6 <= found.steps <= 12 and lrs == sorted(lrs) and START_LR <= lrs[0] < lrs[-1] <= END_LR
        assert found.method == method and found.family == "blip" and found.published is not None
        lowest = min(range(len(lrs)), key=lambda i: found.curve[i][1])
        assert found.fallback or found.lr == pytest.approx(lrs[lowest] / 10)
        # A resumed run keeps the rate it started with (read back from its run folder, not tested again).
        stored = found.to_dict()
        stored["lr"] = 1.23e-3
        (tmp_path / "lr_range.json").write_text(json.dumps(stored), encoding="utf-8")
        again = find_learning_rate(captioner, family, model, examples, config, tmp_path, lambda *a, **k: None,
                                   NEVER_CANCELLED)
        assert again is not None and again.lr == 1.23e-3
    finally:
        captioner.close()
