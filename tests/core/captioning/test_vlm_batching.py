"""Batched captioning of the vision-language families, and shrinking photos before the processor.

For every VLM family (tiny random models built from configs, greedy decoding):

* captioning N photos of *different* sizes in one batch gives exactly the captions (and
  scores) of captioning each alone: left padding for the decoder-only models (Qwen2-VL's
  rows even differ in image-token count), the encoder-decoder Florence-2 pads its encoder;
* a large photo is shrunk to the family's processor size before the processor
  (:mod:`core.captioning.input_size`), and the processor's output for the shrunk photo is
  the one for the full photo up to resampling noise, with the same caption.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image

from core.captioning import GenerationSettings, load_captioner
from core.captioning.captioner import model_input_side
from tests.support import tiny_models

BUILDERS = {"florence2": tiny_models.build_tiny_florence2, "llava": tiny_models.build_tiny_llava,
            "qwen2-vl": tiny_models.build_tiny_qwen2_vl, "idefics3": tiny_models.build_tiny_idefics3,
            "paligemma": tiny_models.build_tiny_paligemma}

#: (width, height): square, landscape, portrait, large, odd - all shrink or grow differently.
SIZES = [(64, 64), (120, 50), (40, 90), (640, 480), (33, 77), (300, 1000)]
SETTINGS = GenerationSettings(max_new_tokens=8, min_new_tokens=8)


def _photo(width: int, height: int, seed: int) -> Image.Image:
    """Smooth content with some noise: resampling it twice or once gives nearly the same pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([127 + 100 * np.sin(x / (7 + seed) + c) * np.cos(y / (11 + seed)) for c in range(3)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def captioners(tmp_path_factory: pytest.TempPathFactory):
    made = {}

    def get(name: str):
        if name not in made:
            folder = BUILDERS[name](tmp_path_factory.mktemp(f"tiny-{name}"))
            made[name] = load_captioner(folder, device="cpu", optimize="none")
        return made[name]

    yield get
    for captioner in made.values():
        captioner.close()


@pytest.mark.parametrize("name", list(BUILDERS))
def test_a_batch_of_different_sizes_captions_like_each_image_alone(captioners, name: str) -> None:
    captioner = captioners(name)
    images = [_photo(w, h, i) for i, (w, h) in enumerate(SIZES)]
    alone = [captioner.generate(captioner.preprocess([im], SETTINGS), SETTINGS)[0] for im in images]
    batch = captioner.preprocess(images, SETTINGS)
    together = captioner.generate(batch, SETTINGS)
    assert [r.text for r in together] == [r.text for r in alone]
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    assert [r.score for r in together] == pytest.approx([r.score for r in alone], abs=1e-4)
    if not captioner.model.config.is_encoder_decoder:
        mask = batch.inputs["attention_mask"]
        assert bool((mask[:, -1] == 1).all()), "decoder-only rows must end where generation starts (left padding)"
    if name == "qwen2-vl":
        # Dynamic resolution: the photos really do get different numbers of image tokens.
        image_token = captioner.model.config.image_token_id
        counts = (batch.inputs["input_ids"] == image_token).sum(1).tolist()
        assert len(set(counts)) > 1, counts


def test_idefics3_batch_with_image_splitting_captions_like_each_image_alone(captioners) -> None:
    """SmolVLM checkpoints split large photos into tiles: rows get different numbers of images."""
    captioner = captioners("idefics3")
    image_processor = captioner.processor.image_processor
    saved = image_processor.do_image_splitting, dict(image_processor.size)
    image_processor.do_image_splitting, image_processor.size = True, {"longest_edge": 64}
    try:
        images = [_photo(w, h, i) for i, (w, h) in enumerate(SIZES)]
        alone = [captioner.generate(captioner.preprocess([im], SETTINGS), SETTINGS)[0].text for im in images]
        batch = captioner.preprocess(images, SETTINGS)
        assert batch.inputs["pixel_values"].shape[1] > 1  # tiles + global image for the large photos
        assert [r.text for r in captioner.generate(batch, SETTINGS)] == alone
    finally:
        image_processor.do_image_splitting, image_processor.size = saved


@pytest.mark.parametrize("name", list(BUILDERS))
def test_large_photos_are_shrunk_before_the_processor_with_the_same_result(captioners, name: str) -> None:
    captioner = captioners(name)
    family, processor = captioner.family, captioner.processor
    for i, (w, h) in enumerate([(1600, 1200), (900, 1400), (2000, 500)]):
        full = _photo(w, h, i)
        shrunk = family.fit_for_processor(processor, full)
        assert max(shrunk.size) < max(full.size) / 4, (name, shrunk.size)
        images_full, images_shrunk = family.processor_images([full]), family.processor_images([shrunk])
        text = [family.build_prompt(captioner, captioner.effective_prompt(SETTINGS))]
        ref = processor(images=images_full, text=text, return_tensors="pt")
        out = processor(images=images_shrunk, text=text, return_tensors="pt")
        assert torch.equal(out["input_ids"], ref["input_ids"])  # same image-token counts
        for key in ("image_grid_thw", "pixel_attention_mask"):
            if key in ref:
                assert torch.equal(out[key], ref[key]), key
        assert out["pixel_values"].shape == ref["pixel_values"].shape
        diff = (out["pixel_values"] - ref["pixel_values"]).abs()
        # Normalised pixels span about [-2, 2]: resampling twice moves them by little.
        assert float(diff.mean()) < 0.02 and float(diff.max()) < 0.35, (name, float(diff.mean()), float(diff.max()))
        # preprocess() shrinks by itself, so the caption is what the shrunk photo gives.
        with_full = captioner.generate(captioner.preprocess([full], SETTINGS), SETTINGS)[0].text
        unshrunk = {k: v for k, v in ref.items()}
        from core.captioning.captioner import PreparedBatch

        direct = captioner.generate(PreparedBatch(inputs=unshrunk, size=1, prompt=captioner.effective_prompt(SETTINGS)),
                                    SETTINGS)[0].text
        assert with_full == direct


@pytest.mark.parametrize("name", list(BUILDERS))
def test_small_photos_are_never_enlarged_before_the_processor(captioners, name: str) -> None:
    captioner = captioners(name)
    small = _photo(20, 12, 0)
    assert captioner.family.fit_for_processor(captioner.processor, small) is small


def test_qwen2_vl_shrinks_to_exactly_its_processor_grid(captioners) -> None:
    """The shrunk photo gets the very grid (and so image-token count) the full photo gets."""
    captioner = captioners("qwen2-vl")
    image_processor = captioner.processor.image_processor
    for w, h in [(4000, 3000), (3000, 4000), (1234, 567), (6000, 200), (301, 299)]:
        full = Image.new("RGB", (w, h), (10, 20, 30))
        shrunk = captioner.family.fit_for_processor(captioner.processor, full)
        grids = [image_processor(images=[im], return_tensors="pt")["image_grid_thw"] for im in (full, shrunk)]
        assert torch.equal(grids[0], grids[1]), (w, h)


def test_jpeg_draft_size_follows_the_family(captioners) -> None:
    """The decode's input side: Qwen2-VL's pixel budget, Idefics3's longest edge, SigLIP's size."""
    assert model_input_side(captioners("qwen2-vl")) == 64  # max_pixels 64*64
    assert model_input_side(captioners("idefics3")) == 32
    assert model_input_side(captioners("paligemma")) == 32
    assert model_input_side(captioners("llava")) == 32


def test_decode_and_caption_a_large_jpeg_like_the_in_memory_photo(captioners, tmp_path: Path) -> None:
    """The engine's decode (JPEG draft at the family's side) + shrink gives the in-memory caption."""
    from core.captioning.captioner import load_model_image

    captioner = captioners("qwen2-vl")
    photo = _photo(2400, 1800, 3)
    path = tmp_path / "big.jpg"
    photo.save(path, quality=95)
    decoded = load_model_image(captioner, path)
    assert max(decoded.size) < 2400  # drafted at a reduced DCT scale
    grid = [captioner.preprocess([im], SETTINGS).inputs["image_grid_thw"] for im in (decoded, Image.open(path))]
    assert torch.equal(grid[0], grid[1])


@pytest.mark.parametrize("name", list(BUILDERS))
def test_auto_quantizes_exactly_the_families_measured_faster_in_int8(tmp_path_factory, captioners, name: str) -> None:
    """``optimize="auto"`` on the CPU: int8 where the family declares it (measured: LLaVA, Idefics3),
    and then batched int8 captions are the single-image int8 captions and stay close to fp32."""
    from core.captioning.families import get_family

    family = get_family(name)
    assert family.cpu_int8_eligible == (name in ("llava", "idefics3"))
    folder = BUILDERS[name](tmp_path_factory.mktemp(f"auto-{name}"))
    with load_captioner(folder, device="cpu", optimize="auto") as fast:
        assert ("int8" in fast.identity["optimizations"]) == family.cpu_int8_eligible
        if not family.cpu_int8_eligible:
            return
        images = [_photo(w, h, i) for i, (w, h) in enumerate(SIZES)]
        batched = [r.text for r in fast.generate(fast.preprocess(images, SETTINGS), SETTINGS)]
        assert batched == [fast.generate(fast.preprocess([im], SETTINGS), SETTINGS)[0].text for im in images]
    reference = captioners(name)
    fp32 = [r.text for r in reference.generate(reference.preprocess(images, SETTINGS), SETTINGS)]
    # Random tiny weights give near-ties; measured 11-12 of 12 unchanged (tests/ int8 probe).
    assert sum(a == b for a, b in zip(batched, fp32, strict=True)) >= len(images) - 2
