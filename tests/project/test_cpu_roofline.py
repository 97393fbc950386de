"""benchmarks/cpu_roofline.py counts a batch's work on a real (tiny) model: the prefill's
operations grow with the photos, every further token is a step, and a step reads BLIP's
cached image keys/values."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support.paths import REPO_ROOT


def _roofline():
    sys.path.insert(0, str(REPO_ROOT))
    try:
        from benchmarks import caption_model_speed, cpu_roofline
    finally:
        sys.path.remove(str(REPO_ROOT))
    return caption_model_speed, cpu_roofline


def test_batch_work_counts_prefill_steps_and_image_keys(tiny_blip_dir: Path) -> None:
    from transformers import BlipConfig

    _speed, roofline = _roofline()
    one, two = (roofline.batch_work(tiny_blip_dir, photos, tokens=6) for photos in (1, 2))
    assert one["steps"] == two["steps"] == 5
    # Twice the photos, about twice the prefill (the tower and the image projection are per photo).
    assert 1.8 < two["prefill_ops"] / one["prefill_ops"] < 2.2
    assert two["step_ops"] > one["step_ops"] > 0
    config = BlipConfig.from_pretrained(tiny_blip_dir)
    side = config.vision_config.image_size // config.vision_config.patch_size
    cross = 2 * config.text_config.num_hidden_layers * (side * side + 1) * config.text_config.hidden_size * 4
    # Each photo's cross-attention keys and values (fp32) are read by every step, besides the weights.
    assert two["kv_bytes"] >= 2 * cross and two["step_bytes"] > two["kv_bytes"]
