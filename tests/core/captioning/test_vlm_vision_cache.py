"""The frozen-vision cache for the prompted vision-language families (core/captioning/families/chat_vlm.py).

For LLaVA, Qwen2-VL, Idefics3, PaliGemma and Florence-2 (tiny random models of
tests/support/tiny_models.py):

* a cached micro-batch (per-example ``get_image_features`` output + prompt tokens, rows in
  shuffled order, images of different sizes; Idefics3 with image splitting, different tile
  counts) has exactly the uncached batch's token tensors
  and the same loss, and its gradients reach the language model;
* the cache is declined when the projector trains (full fine-tuning);
* a short LoRA run with the cache (``cache_vision="auto"``) records the same per-epoch losses
  and LoRA weights as one without (``"no"``); the memory limit (``cache_limit_mb``) turns it off.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.library import Library
from core.training import TrainingConfig, train, versions
from tests.support import tiny_models
from tests.support.training_scenario import STYLE_B, label, square, squares_library

BUILDERS = {"florence2": tiny_models.build_tiny_florence2, "llava": tiny_models.build_tiny_llava,
            "qwen2-vl": tiny_models.build_tiny_qwen2_vl, "idefics3": tiny_models.build_tiny_idefics3,
            "paligemma": tiny_models.build_tiny_paligemma}
SHORT_LORA = {"method": "lora", "lr": 5e-3, "lora_dropout": 0.1, "epochs": 2, "batch_size": 8, "val_ratio": 0.25,
              "max_new_tokens": 6, "device": "cpu", "patience": 0}

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vlm-cache-models")
    return {key: build(root / key) for key, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory):
    lib = squares_library(tmp_path_factory.mktemp("vlm-cache"), 32)
    label(lib, STYLE_B)
    yield lib
    lib.close()


def _load(path: Path):
    from core.captioning import load_captioner

    return load_captioner(str(path), device="cpu", optimize="none")


@pytest.mark.parametrize("key", list(BUILDERS))
def test_cached_batch_and_loss_equal_the_uncached(models: dict[str, Path], key: str) -> None:
    captioner = _load(models[key])
    family, model = captioner.family, captioner.model
    assert family.supports_vision_cache
    for module in family.image_feature_modules(model):  # as under LoRA on the language model
        module.requires_grad_(False)
    model.train()
    vision = family.vision_tower(model)
    vision.eval()
    rng = np.random.default_rng(0)
    # Different sizes: Qwen2-VL gives the 48 px image fewer image tokens (rows of different lengths).
    images = [square("red", rng), square("blue", rng, size=48), square("green", rng)]
    text = family.encode_training_batch(captioner, ["a red square", "the picture of a square in blue", "green"], 40)
    with torch.no_grad():
        entries = family.vision_cache_entries(captioner, model, vision, images, text)
    assert entries is not None and len(entries) == 3
    order = torch.tensor([2, 0, 1])  # a shuffled micro-batch: entries are keyed per example
    rows = {k: v[order] for k, v in text.items()}
    cached = family.training_batch(captioner, rows, None, entries[order])
    uncached = family.training_batch(captioner, rows, [images[i] for i in order.tolist()], None)
    assert "pixel_values" not in cached and "image_features" in cached
    for name, value in uncached.items():
        if not name.startswith("pixel_"):
            assert torch.equal(cached[name], value), name
    if key == "qwen2-vl":  # per-example grids: the 48 px image has its own (smaller) grid
        assert torch.equal(cached["image_grid_thw"], uncached["image_grid_thw"])
        assert len(set(cached["image_grid_thw"].prod(-1).tolist())) == 2
    torch.manual_seed(0)  # the same dropout draws in both (train mode; frozen vision in eval mode)
    with_cache = family.loss(model, cached)
    torch.manual_seed(0)
    without = family.loss(model, uncached)
    torch.testing.assert_close(with_cache, without, rtol=0, atol=1e-5)
    with_cache.backward()
    language = [p for n, p in model.named_parameters() if "embed" not in n and p.requires_grad]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in language)
    captioner.close()


def test_idefics3_tiles_of_different_counts_are_cached_per_example(models: dict[str, Path]) -> None:
    """Image splitting (SmolVLM's default): a wide photo gets fewer tiles than a square one, the
    processor pads the pixel tensor with empty tiles; each example keeps its own features."""
    captioner = _load(models["idefics3"])
    family, model = captioner.family, captioner.model
    image_processor = captioner.processor.image_processor
    image_processor.do_image_splitting = True
    image_processor.size, image_processor.max_image_size = {"longest_edge": 64}, {"longest_edge": 32}
    for module in family.image_feature_modules(model):
        module.requires_grad_(False)
    model.train()
    family.vision_tower(model).eval()
    rng = np.random.default_rng(0)
    images = [square("red", rng), square("blue", rng).crop((0, 16, 64, 48)), square("green", rng, size=48)]
    text = family.encode_training_batch(captioner, ["a red square", "a blue square", "a green square"], 40)
    with torch.no_grad():
        entries = family.vision_cache_entries(captioner, model, family.vision_tower(model), images, text)
    assert [len(e["features"]) for e in entries] == [20, 12, 20]  # (4 tiles + global) x 4, (2 + 1) x 4
    order = torch.tensor([1, 2, 0])
    rows = {k: v[order] for k, v in text.items()}
    cached = family.training_batch(captioner, rows, None, entries[order])
    uncached = family.training_batch(captioner, rows, [images[i] for i in order.tolist()], None)
    assert torch.equal(cached["input_ids"], uncached["input_ids"])
    torch.manual_seed(0)
    with_cache = family.loss(model, cached)
    torch.manual_seed(0)
    torch.testing.assert_close(with_cache, family.loss(model, uncached), rtol=0, atol=1e-5)
    captioner.close()


@pytest.mark.parametrize("key", ["llava", "qwen2-vl"])
def test_no_cache_when_the_projector_trains(models: dict[str, Path], key: str) -> None:
    captioner = _load(models[key])
    family, model = captioner.family, captioner.model
    vision = family.vision_tower(model)
    vision.requires_grad_(False)
    rng = np.random.default_rng(0)
    text = family.encode_training_batch(captioner, ["a red square"], 40)
    trainable = [p for m in family.image_feature_modules(model) if m is not vision for p in m.parameters()]
    if not trainable:  # Qwen2-VL's patch merger is inside the tower: train one tower layer instead
        trainable = list(vision.parameters())[-2:]
    for p in trainable:
        p.requires_grad_(True)
    with torch.no_grad():
        assert family.vision_cache_entries(captioner, model, vision, [square("red", rng)], text) is None
    captioner.close()


@pytest.mark.parametrize("key", list(BUILDERS))
def test_lora_run_with_the_cache_has_the_same_losses(library: Library, models: dict[str, Path], key: str) -> None:
    results = {}
    for cache in ("auto", "no"):
        torch.manual_seed(0)
        results[cache] = train(library, str(models[key]), f"{key}-cache-{cache}",
                               TrainingConfig(**SHORT_LORA, cache_vision=cache))
    assert results["auto"].cached_vision and not results["no"].cached_vision
    cached, plain = results["auto"].history, results["no"].history
    assert [h["epoch"] for h in cached] == [h["epoch"] for h in plain] == [0, 1, 2]
    assert [h["loss"] for h in cached] == pytest.approx([h["loss"] for h in plain], abs=2e-5)
    assert cached[2]["loss"] < cached[1]["loss"]  # it trained
    # The same training steps: the same LoRA weights in both saved versions.
    from safetensors.torch import load_file

    adapters = [load_file(Path(versions.get_version(library, f"{key}-cache-{c}").adapter_path,
                               "adapter_model.safetensors")) for c in ("auto", "no")]
    assert adapters[0].keys() == adapters[1].keys() and adapters[0]
    for name, weight in adapters[0].items():
        torch.testing.assert_close(weight, adapters[1][name], rtol=0, atol=1e-5)


def test_memory_limit_and_full_finetuning_run_without_the_cache(library: Library, models: dict[str, Path]) -> None:
    limited = train(library, str(models["llava"]), "llava-cache-limit",
                    TrainingConfig(**{**SHORT_LORA, "epochs": 1}, cache_vision="auto", cache_limit_mb=0))
    assert not limited.cached_vision  # the features would exceed the limit: computed every step
    full = train(library, str(models["llava"]), "llava-cache-full",
                 TrainingConfig(**{**SHORT_LORA, "epochs": 1, "method": "full"}))
    assert not full.cached_vision  # full fine-tuning trains the projector: its features change
