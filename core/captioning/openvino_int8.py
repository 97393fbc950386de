"""int8 for the OpenVINO runtime (``openvino-int8``): NNCF weight compression, and for the
families of :data:`STATIC_INT8_FAMILIES` full int8 (weights and activations) of the vision
tower, calibrated on a fixed set of generated photos.

Weights only (``nncf.compress_weights``, per output channel): the activations stay fp32,
the GEMMs too.  Full int8 (``nncf.quantize``, transformer model type, SmoothQuant, symmetric
activations) puts fixed int8 scales on the activations as well, so the CPU runs int8 GEMMs
(VNNI); BLIP-base's tower ran 1.45x faster than the torch engine's per-image int8
(docs/optimization-notes.md, "OpenVINO runtime").  The scales are fixed at conversion, so
an image's result never depends on its batch-mates.

The calibration photos are drawn here, not read from the user's disk: a converted model
then depends only on the model and :data:`CALIBRATION` (part of the cache key), the same on
every machine, offline, and whatever the first photos of a job happen to be.  They are
photo-like scenes (sky, horizon, ground texture, objects, light and shadow, sensor noise,
dark and bright exposures), not noise, so the activation ranges resemble a real photo's.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any

__all__ = ["CALIBRATION", "STATIC_INT8_FAMILIES", "calibration_photos", "calibration_pixels", "int8_static", "int8_weights",
           "qwen_calibration"]

#: Families whose vision tower gets int8 activations too under ``openvino-int8`` (measured
#: faster than int8 weights alone: docs/optimization-notes.md, "OpenVINO runtime").
STATIC_INT8_FAMILIES: frozenset[str] = frozenset({"blip", "qwen2-vl", "florence2", "idefics3"})


#: How many generated photos calibrate the activation scales.
CALIBRATION_IMAGES = 16
#: Names the calibration in the cache key: change it when the photos, their count or the preset change.
CALIBRATION = f"scenes-1x{CALIBRATION_IMAGES}, symmetric"


@contextlib.contextmanager
def _quiet_nncf() -> Any:
    """NNCF's tables and progress bars would land in the middle of a command's output."""
    import nncf
    from nncf.common.logging import nncf_logger

    level = nncf_logger.level
    nncf.set_log_level(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        nncf.set_log_level(level)


def int8_weights(ov_model: Any) -> Any:
    """*ov_model* with its weights compressed to int8 per output channel (activations fp32)."""
    import nncf

    with _quiet_nncf():
        return nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT8_ASYM)


def int8_static(ov_model: Any, samples: Any) -> Any:
    """*ov_model* with int8 weights and activations, the activation scales calibrated on
    *samples*: one image's inputs each (an array, or a tuple of arrays in the model's input
    order), or an ``(n, ...)`` array of single-input batches, split one image a step."""
    import nncf

    if hasattr(samples, "shape"):
        samples = [samples[i : i + 1] for i in range(len(samples))]
    samples = list(samples)
    dataset = nncf.Dataset(samples)
    with _quiet_nncf():
        # Symmetric activations: a trained tiny BLIP kept 47/48 captions, against 44/48 with
        # the default mixed preset, at the same speed (docs/optimization-notes.md).
        return nncf.quantize(ov_model, dataset, model_type=nncf.ModelType.TRANSFORMER,
                             preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(samples))


def _smooth_noise(rng: Any, height: int, width: int, cells: int) -> Any:
    """Noise with structure at about ``cells`` blobs across: texture, not static."""
    import numpy as np
    from PIL import Image

    coarse = rng.random((cells, max(2, cells * width // height))).astype(np.float32)
    image = Image.fromarray(coarse, "F").resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(image)


def _scene(index: int) -> Any:
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(1000 + index)
    width, height = ((512, 384), (384, 512), (512, 288), (448, 448))[index % 4]
    horizon = int(height * rng.uniform(0.3, 0.7))
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    sky_top, sky_low = rng.uniform(0.2, 1.0, 3), rng.uniform(0.5, 1.0, 3)
    ground = rng.uniform(0.05, 0.7, 3)
    pixels = np.where(np.arange(height)[:, None, None] < horizon,
                      sky_top + (sky_low - sky_top) * y * height / max(horizon, 1),
                      ground * (0.6 + 0.8 * _smooth_noise(rng, height, width, int(rng.integers(6, 40)))[..., None]))
    pixels = np.broadcast_to(pixels, (height, width, 3)) * 255
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 8))):  # objects: buildings, trees, people-sized blocks, a sun
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(horizon // 2, height))
        w, h = int(rng.integers(width // 20, width // 3)), int(rng.integers(height // 12, height // 2))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0 - h, x0 + w, y0), fill=colour)
        else:
            draw.rectangle((x0, y0 - h, x0 + w, y0), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.5))))
    light = 0.4 + 0.8 * _smooth_noise(rng, height, width, 3)[..., None] * rng.uniform(0.6, 1.4)
    noisy = np.asarray(image, np.float32) * light + rng.normal(0, rng.uniform(2, 8), (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def calibration_photos(count: int = CALIBRATION_IMAGES) -> list:
    """*count* generated photo-like RGB scenes, the same on every call and machine."""
    return [_scene(i) for i in range(count)]


def qwen_calibration(visual: Any, processor: Any) -> list[tuple[Any, Any, Any]]:
    """The generated calibration photos as Qwen2-VL's tower sees them: per photo its
    patches and rotary cos/sin, as the runtime's Qwen2-VL tower passes them."""
    import torch
    from transformers.vision_utils import get_vision_position_ids

    inputs = getattr(processor, "image_processor", processor)(images=calibration_photos(), return_tensors="pt")
    samples, start = [], 0
    for grid in inputs["image_grid_thw"]:
        length = int(grid.prod())
        with torch.no_grad():
            cos, sin = visual.rotary_pos_emb(inputs["pixel_values"][:0].float(),
                                             get_vision_position_ids(grid[None], visual.spatial_merge_size))
        patches = inputs["pixel_values"][start : start + length].float()
        samples.append(tuple(t.contiguous().numpy() for t in (patches, cos, sin)))
        start += length
    return samples


def calibration_pixels(processor: Any, size: tuple[int, int]) -> Any:
    """The generated calibration photos as the processor makes them, at the converted *size*."""
    made = getattr(processor, "image_processor", processor)(images=calibration_photos(), return_tensors="np")
    pixels = made["pixel_values"]
    if pixels.ndim == 5:  # Idefics3: crops per photo; the padding crops are not photos
        mask = made.get("pixel_attention_mask")
        keep = mask.reshape(*mask.shape[:2], -1).all(-1) if mask is not None else None
        pixels = pixels.reshape(-1, *pixels.shape[2:])[keep.reshape(-1) if keep is not None else slice(None)]
    if tuple(pixels.shape[-2:]) != size:
        raise ValueError(f"the processor makes {tuple(pixels.shape[-2:])} images, the tower was converted for {size}")
    return pixels.astype("float32")
