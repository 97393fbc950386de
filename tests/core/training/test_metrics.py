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


# --------------------------------------------------------------------------- BERTScore, CLIPScore

HYPS = ["a red circle on black", "the picture of a large square", "blue", "a small green triangle on white"]
REFS = ["a red circle on white", ["a small square", "the picture of a large square in red"], "a blue triangle",
        "a small green triangle on white"]


def test_bertscore_equals_the_bert_score_package_raw_and_rescaled(metric_model_dirs: dict) -> None:
    bert_score_package = pytest.importorskip("bert_score")
    from core.training.semantic_metrics import BASELINE_FILE, bert_score

    folder = metric_model_dirs["roberta"]
    refs = [[r] if isinstance(r, str) else r for r in REFS]
    mine = bert_score(HYPS, REFS, model=str(folder), device="cpu")
    assert mine["layer"] == 3 and not mine["rescaled"]  # not roberta-large: its last layer; no baseline file
    theirs = bert_score_package.score(HYPS, refs, model_type=str(folder), num_layers=3, device="cpu")
    for (p, r, f), tp, tr, tf in zip(mine["per_image"], *theirs, strict=True):
        assert (p, r, f) == pytest.approx((float(tp), float(tr), float(tf)), abs=1e-5)
    assert mine["bertscore_f1"] == pytest.approx(float(theirs[2].mean()), abs=1e-5)
    # Another layer, with a baseline file in the model folder: rescaled as bert-score rescales.
    baseline = folder.parent / "baseline-copy"
    baseline.mkdir(exist_ok=True)
    (baseline / BASELINE_FILE).write_text("LAYER,P,R,F\n0,0.1,0.1,0.1\n1,0.5,0.4,0.45\n2,0.6,0.5,0.55\n3,0.7,0.6,0.65\n")
    rescaled = bert_score(HYPS, REFS, model=str(folder), layer=1, baseline=baseline / BASELINE_FILE, device="cpu")
    theirs = bert_score_package.score(HYPS, refs, model_type=str(folder), num_layers=1, device="cpu", lang="en",
                                      rescale_with_baseline=True, baseline_path=str(baseline / BASELINE_FILE))
    assert rescaled["rescaled"] and rescaled["bertscore_p"] == pytest.approx(float(theirs[0].mean()), abs=1e-5)
    assert rescaled["bertscore_r"] == pytest.approx(float(theirs[1].mean()), abs=1e-5)


def _tensor_features(model: object) -> object:
    """torchmetrics 1.9 expects ``get_*_features`` to return tensors; transformers 5 returns an output."""
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.config = model, model.config

        def get_image_features(self, *args: object, **kwargs: object) -> torch.Tensor:
            return self.inner.get_image_features(*args, **kwargs).pooler_output

        def get_text_features(self, *args: object, **kwargs: object) -> torch.Tensor:
            return self.inner.get_text_features(*args, **kwargs).pooler_output

    return Wrapped()


def test_clipscore_equals_torchmetrics_and_refclipscore_its_formula(metric_model_dirs: dict) -> None:
    pytest.importorskip("torchmetrics")
    import numpy as np
    import torch
    from PIL import Image
    from torchmetrics.functional.multimodal import clip_score as tm_clip_score
    from transformers import CLIPModel, CLIPProcessor

    from core.training.semantic_metrics import clip_score

    folder = str(metric_model_dirs["clip"])
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in HYPS]
    mine = clip_score(images, HYPS, REFS, model=folder, device="cpu")
    model, processor = CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder)
    wrapped = _tensor_features(model)
    for image, hyp, score in zip(images, HYPS, mine["per_image"], strict=True):
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)
        theirs = float(tm_clip_score(pixels, hyp, lambda: (wrapped, processor)))  # 100 * max(cos, 0)
        assert score == pytest.approx(theirs / 100 * 2.5, abs=1e-5)
    # RefCLIPScore: the harmonic mean of CLIP-S and max(best cosine with a reference, 0).
    with torch.no_grad():
        def text(t: str) -> torch.Tensor:
            enc = processor(text=[t], return_tensors="pt", padding=True)
            f = model.get_text_features(**enc).pooler_output[0]
            return f / f.norm()
        for hyp, refs, clip, ref_clip in zip(HYPS, REFS, mine["per_image"], mine["per_image_ref"], strict=True):
            refs = [refs] if isinstance(refs, str) else refs
            ref_term = max(0.0, max(float(text(hyp) @ text(r)) for r in refs))
            expected = 2 * clip * ref_term / (clip + ref_term) if clip + ref_term else 0.0
            assert ref_clip == pytest.approx(expected, abs=1e-5)
    assert any(s > 0 for s in mine["per_image"])  # the check above compares real values, not zeros
    assert mine["refclipscore"] == pytest.approx(sum(mine["per_image_ref"]) / len(HYPS))


def test_a_missing_metric_model_is_named_and_the_other_metric_still_computed(
        metric_model_dirs: dict, tmp_path, monkeypatch) -> None:
    from core.training.semantic_metrics import semantic_metrics

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    images = []
    for i in range(len(HYPS)):
        from PIL import Image

        Image.new("RGB", (40, 40), (60 * i, 20, 200)).save(tmp_path / f"{i}.png")
        images.append(tmp_path / f"{i}.png")
    result = semantic_metrics(HYPS, REFS, images, bertscore_model="no-such-org/no-such-bert",
                              clip_model=str(metric_model_dirs["clip"]), device="cpu")
    assert set(result.metrics) == {"clipscore", "refclipscore"}
    assert len(result.skipped) == 1 and result.skipped[0].startswith("BERTScore skipped: 'no-such-org/no-such-bert'")
    assert "offline" in result.skipped[0]
    result = semantic_metrics(HYPS, REFS, images, bertscore_model=str(metric_model_dirs["roberta"]),
                              clip_model=str(tmp_path / "missing-folder"), device="cpu")
    assert set(result.metrics) == {"bertscore_p", "bertscore_r", "bertscore_f1"}
    assert result.skipped[0].startswith("CLIPScore skipped:") and result.notes[0].startswith("BERTScore not rescaled")
