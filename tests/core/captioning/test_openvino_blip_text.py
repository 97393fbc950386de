"""BLIP's text decoder on OpenVINO (tiny BLIP): the torch fp32 token ids, log-probabilities and
margins under ``openvino`` (greedy, beams with a repetition penalty, a padded prompt), an
``openvino-int8`` caption independent of its batch-mates, the parts cached."""

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


@pytest.fixture
def blip_copy(tiny_blip_dir: Path, tmp_path: Path) -> Path:
    """A private copy: the cache is written beside the model."""
    return Path(shutil.copytree(tiny_blip_dir, tmp_path / "blip"))


def _images(n: int) -> list:
    images, _ = shape_dataset(n, seed=3)
    return [im.convert("RGB") for im in images]


def test_text_decoder_on_openvino_gives_the_torch_tokens_and_scores(blip_copy: Path) -> None:
    import torch

    images = _images(4)
    reference = load_captioner(str(blip_copy), device="cpu", optimize="none")
    messages: list[str] = []
    ov = load_captioner(str(blip_copy), device="cpu", runtime="openvino", progress=messages.append)
    assert any("Converting the text-step model" in m for m in messages)
    bert = ov.model.text_decoder.bert
    assert type(bert).__name__ == "OpenVINOBlipText"
    # Only the embeddings stay on torch: the decoder layers and the head are let go.
    assert all(name.startswith("embeddings.") for name, _ in bert.named_parameters())
    assert not list(ov.model.text_decoder.cls.parameters())
    for settings in (SETTINGS, GenerationSettings(max_new_tokens=8, num_beams=2, repetition_penalty=1.3)):
        want, have = reference.caption(images, settings), ov.caption(images, settings)
        assert [r.token_ids for r in have] == [r.token_ids for r in want]
        for got, expected in zip(have, want, strict=True):
            assert got.token_logprobs == pytest.approx(expected.token_logprobs, abs=1e-4)
            assert got.token_margins == pytest.approx(expected.token_margins, abs=1e-4)
    # A text prompt, rows of different lengths (left padding): the same tokens and raw logits.
    tokenizer = reference.tokenizer
    tokenizer.padding_side = "left"
    prompts = tokenizer(["a photo of", "a picture of a red"], padding=True, return_tensors="pt")
    assert bool((prompts["attention_mask"] == 0).any())
    kwargs = reference._generate_kwargs(SETTINGS)
    with torch.inference_mode():
        pixels = reference.pixel_values(images[:2])
        expected, got = (m.model.generate(pixel_values=pixels, input_ids=prompts["input_ids"].clone(),
                                          attention_mask=prompts["attention_mask"], **kwargs) for m in (reference, ov))
    assert got.sequences.equal(expected.sequences)
    assert max(float((a - b).abs().max()) for a, b in zip(got.logits, expected.logits, strict=True)) < 1e-4


def test_int8_text_decoder_same_caption_alone_or_in_a_batch(blip_copy: Path) -> None:
    images = _images(4)
    int8 = load_captioner(str(blip_copy), device="cpu", runtime="openvino-int8")
    # optimize="auto": nothing is left on torch to quantize.
    assert int8.identity["optimizations"] == ["openvino-int8"]
    assert_same_alone_as_in_batch(int8, images, SETTINGS, alone=2)
    [slot] = (blip_copy / openvino_runtime.CACHE_DIR_NAME).iterdir()
    for part in ("text-cross", "text-step"):
        assert json.loads((slot / part / "key.json").read_text())["options"]["weights"] == "int8"
    # A second load takes every part from the cache.
    messages: list[str] = []
    load_captioner(str(blip_copy), device="cpu", runtime="openvino-int8", progress=messages.append)
    assert not any("Converting" in m for m in messages)
    assert any("Using the cached OpenVINO text-step model" in m for m in messages)
