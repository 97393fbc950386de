"""Caption metrics against hand-computed values, and the training config / data rules."""

from __future__ import annotations

import math

import pytest

from core.training.config import TrainingConfig, default_target_modules
from core.training.metrics import (
    bleu4,
    caption_metrics,
    cider_d,
    edit_rate,
    exact_match,
    rouge_l,
    tokenize,
    word_edit_distance,
)


def test_tokenize_lowercases_and_drops_punctuation() -> None:
    assert tokenize("A red, round Circle!") == ["a", "red", "round", "circle"]


def test_bleu4_identical_is_one_and_hand_computed_case() -> None:
    assert bleu4(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1.0)
    # hyp "the cat the cat" vs ref "the cat sat on the mat":
    #   p1 = 3/4 (the x2, cat x1 clipped), p2 = 1/3 ("the cat" once), p3 = 0/2 -> 0.1/2, p4 = 0/1 -> 0.1/1
    #   BP = exp(1 - 6/4)
    expected = math.exp(1 - 6 / 4) * (0.75 * (1 / 3) * 0.05 * 0.1) ** 0.25
    assert bleu4(["the cat the cat"], ["the cat sat on the mat"]) == pytest.approx(expected, rel=1e-9)


def test_bleu4_is_corpus_level_and_uses_the_closest_reference() -> None:
    # A 3-word caption has no 4-grams, but the corpus counts make BLEU-4 defined (and 1 here).
    assert bleu4(["a red circle on black", "a blue square"], ["a red circle on black", "a blue square"]) == 1.0
    # Two references: the matching one counts, and its length is the closest.
    assert bleu4(["a red circle on black"], [["something else entirely", "a red circle on black"]]) == 1.0
    assert bleu4(["", ""], ["a b", "c d"]) == 0.0


def test_cider_d_hand_computed() -> None:
    # 2 documents, every n-gram in one document: idf = ln 2 for all.
    # Image 1 identical: n=1 and n=2 similarities 1, n=3/4 empty -> (1 + 1) / 4 * 10 = 5.
    # Image 2 "blue square" vs "green square": n=1 cosine 0.5 (clipped), n=2 0 -> 0.5 / 4 * 10 = 1.25.
    score = cider_d(["red circle", "blue square"], ["red circle", "green square"])
    assert score == pytest.approx((5.0 + 1.25) / 2)
    # Identical captions with every n-gram order present score the maximum, 10.
    assert cider_d(["a b c d", "x y z w"], ["a b c d", "x y z w"]) == pytest.approx(10.0)
    # A single image has idf 0 for everything (as in pycocoevalcap).
    assert cider_d(["red circle"], ["red circle"]) == 0.0


def test_rouge_l_hand_computed() -> None:
    # LCS("a red circle", "a big red circle") = 3: P = 1, R = 3/4, beta = 1.2.
    expected = (1 + 1.44) * 1 * 0.75 / (0.75 + 1.44 * 1)
    assert rouge_l(["a red circle"], ["a big red circle"]) == pytest.approx(expected)
    assert rouge_l(["x"], ["a b"]) == 0.0


def test_exact_match_and_edit_rate() -> None:
    assert exact_match(["A red circle.", "a cat"], ["a red circle", "a dog"]) == 0.5
    assert word_edit_distance(["the", "cat"], ["a", "dog", "sat"]) == 3
    # 1 edit / 4 words and 3 edits / 3 words -> mean (0.25 + 1) / 2
    assert edit_rate(["a red circle", "the cat"], ["a big red circle", "a dog sat"]) == pytest.approx(0.625)
    assert edit_rate(["a red circle"], [["no", "a red circle"]]) == 0.0


def test_caption_metrics_bundle() -> None:
    m = caption_metrics(["red circle", "blue square"], ["red circle", "green square"])
    assert set(m) == {"bleu4", "cider", "rouge_l", "exact_match", "edit_rate", "n"}
    assert m["n"] == 2 and m["exact_match"] == 0.5 and m["cider"] == 3.125
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        caption_metrics(["a", "b"], ["a"])


# --------------------------------------------------------------------------- config


def test_training_config_defaults_and_validation() -> None:
    cfg = TrainingConfig()
    assert (cfg.method, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lr, cfg.epochs, cfg.batch_size) == (
        "lora", None, None, None, None, 5, 8)  # None: the family's measured LoRA defaults
    from core.captioning import get_family

    blip = get_family("blip").lora_defaults
    resolved = cfg.with_family_defaults(get_family("blip"))
    assert (resolved.lora_r, resolved.lora_alpha, resolved.lora_dropout, resolved.lr, resolved.target_modules) == (
        blip["r"], blip["alpha"], blip["dropout"], None, blip["targets"])  # lr None: the range test picks it
    assert resolved.fallback_lr(get_family("blip")) == blip["lr"]
    assert TrainingConfig(method="full").fallback_lr(get_family("blip")) == 1e-4
    assert TrainingConfig.from_dict(cfg.to_dict()) == cfg
    for bad, field in [({"method": "dora"}, "method"), ({"lora_r": 0}, "lora_r"), ({"lr": 0}, "lr"),
                       ({"lr": float("nan")}, "lr"), ({"epochs": 1.5}, "epochs"), ({"batch_size": True}, "batch_size"),
                       ({"lora_dropout": 1.0}, "lora_dropout"), ({"val_ratio": 1.0}, "val_ratio"),
                       ({"target_modules": []}, "target_modules"), ({"mixed_precision": "fp8"}, "mixed_precision"),
                       ({"device": "tpu"}, "device"), ({"grad_accum": 0}, "grad_accum")]:
        with pytest.raises(ValueError, match=field):
            TrainingConfig(**bad)
    with pytest.raises(ValueError, match="unknown training setting"):
        TrainingConfig.from_dict({"lora_rank": 4})


def test_default_target_modules_per_family() -> None:
    assert default_target_modules("blip") == ["query", "key", "value", "dense"]  # measured: README "LoRA defaults"
    assert default_target_modules("blip", train_vision=True) == ["query", "key", "value", "dense", "qkv"]
    assert default_target_modules("blip-2") == ["q_proj", "v_proj"]
    assert default_target_modules("pix2struct") == "all-linear"  # generic family: no names of its own
    assert "language_model" in default_target_modules("llava")  # the LLM only: the vision tower has q_proj too
