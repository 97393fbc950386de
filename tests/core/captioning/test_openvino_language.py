"""A VLM's language model on OpenVINO (tiny Idefics3/SmolVLM and Qwen2-VL): the torch fp32 captions, per-token
log-probabilities and margins, with left padding and beam search, no torch decoder step, int8
weights independent of batch-mates, and the converted part cached in its own folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.captioning import load_captioner, openvino_runtime
from core.captioning.job_spec import GenerationSettings
from tests.support.batch_checks import assert_same_alone_as_in_batch
from tests.support.tiny_models import shape_dataset

pytest.importorskip("openvino")

SETTINGS = GenerationSettings(min_new_tokens=4, max_new_tokens=8)
#: Where each family's text model sits on ``model.model``.
TEXT_MODELS = {"idefics3": "text_model", "qwen2_vl": "language_model"}


@pytest.fixture
def smolvlm(tiny_model_dirs: dict, tmp_path: Path) -> Path:
    """A private copy: the cache is written beside the model."""
    return Path(shutil.copytree(tiny_model_dirs["idefics3"], tmp_path / "idefics3"))


def _images(n: int) -> list:
    images, _ = shape_dataset(n, seed=5)
    return [im.convert("RGB") for im in images]


@pytest.mark.parametrize("name", list(TEXT_MODELS))
def test_language_model_on_openvino_gives_the_torch_captions_and_scores(name: str, tiny_model_dirs: dict,
                                                                          tmp_path: Path) -> None:
    import torch

    folder = Path(shutil.copytree(tiny_model_dirs[name], tmp_path / name))
    images = _images(4)
    reference = load_captioner(str(folder), device="cpu", optimize="none")
    messages: list[str] = []
    ov = load_captioner(str(folder), device="cpu", runtime="openvino", progress=messages.append)
    assert any("Converting the language model" in m for m in messages)
    text_model = getattr(ov.model.model, TEXT_MODELS[name])
    assert type(text_model).__name__ == "OpenVINOLanguageModel"
    # Only the word embeddings stay on torch: the decoder layers and the head are let go.
    assert [name for name, _ in text_model.named_parameters()] == ["embed_tokens.weight"]
    assert not list(ov.model.lm_head.parameters())
    for settings in (SETTINGS, GenerationSettings(max_new_tokens=8, num_beams=2, repetition_penalty=1.3)):
        want, have = reference.caption(images, settings), ov.caption(images, settings)
        assert [r.token_ids for r in have] == [r.token_ids for r in want]
        assert all(r.token_logprobs and r.token_margins for r in have)
        for got, expected in zip(have, want, strict=True):
            assert got.token_logprobs == pytest.approx(expected.token_logprobs, abs=1e-4)
            assert got.token_margins == pytest.approx(expected.token_margins, abs=1e-4)
    # Rows of different lengths (left padding): the same tokens and raw logits as torch.
    inputs = reference.encode_prompts(images[:2], ["Describe it.", "What is in this picture, in a few words?"])
    assert bool((inputs["attention_mask"] == 0).any())
    kwargs = reference._generate_kwargs(SETTINGS)
    with torch.inference_mode():
        expected, got = reference.model.generate(**inputs, **kwargs), ov.model.generate(**inputs, **kwargs)
    assert got.sequences.equal(expected.sequences)
    assert max(float((a - b).abs().max()) for a, b in zip(got.logits, expected.logits, strict=True)) < 1e-4


def test_int8_language_model_same_caption_alone_or_in_a_batch(smolvlm: Path) -> None:
    images = _images(4)
    int8 = load_captioner(str(smolvlm), device="cpu", runtime="openvino-int8", optimize="none")
    assert_same_alone_as_in_batch(int8, images, SETTINGS, alone=2)
    [slot] = (smolvlm / openvino_runtime.CACHE_DIR_NAME).iterdir()
    key = json.loads((slot / "language" / "key.json").read_text())
    assert key["options"] == {"part": "language", "precision": "f32", "weights": "int8"}
    # A second load takes both parts from the cache.
    messages: list[str] = []
    load_captioner(str(smolvlm), device="cpu", runtime="openvino-int8", optimize="none", progress=messages.append)
    assert any("Using the cached OpenVINO language model" in m for m in messages)
    assert not any("Converting" in m for m in messages)


def test_a_language_model_with_sliding_window_layers_stays_on_torch(smolvlm: Path) -> None:
    from core.captioning.families.idefics3 import FAMILY

    captioner = load_captioner(str(smolvlm), device="cpu", optimize="none")
    text_model = captioner.model.model.text_model
    text_model.config.layer_types = ["sliding_attention", "full_attention"]
    messages: list[str] = []
    openvino_runtime.apply_openvino(captioner.model, family=FAMILY, model_ref=str(smolvlm), revision=None,
                                    adapter=None, progress=messages.append, processor=captioner.processor)
    assert captioner.model.model.text_model is text_model
    assert any("language model stays on torch: its layers of types full_attention, sliding_attention" in m
               for m in messages)
    assert type(captioner.model.model.vision_model).__name__ == "OpenVINOVisionTower"  # the tower still converted
