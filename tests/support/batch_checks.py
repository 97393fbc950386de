"""Checks shared by the runtime tests: an int8 caption must not depend on its batch-mates; a
VLM's image features as its language model receives them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest


def assert_same_alone_as_in_batch(captioner: Any, images: Sequence[Any], settings: Any, *, alone: int = 2) -> list[Any]:
    """Caption *images* together, then the first *alone* of them one at a time: the same token
    ids and scores; the batch's results."""
    together = captioner.caption(list(images), settings)
    for i, image in enumerate(images[:alone]):
        single = captioner.caption([image], settings)[0]
        assert single.token_ids == together[i].token_ids
        assert single.token_logprobs == pytest.approx(together[i].token_logprobs, abs=1e-5)
        assert single.score == pytest.approx(together[i].score, abs=1e-6)
    return together


def image_features(captioner: Any, inputs: dict) -> Any:
    """The image features *captioner*'s VLM makes of a preprocessed batch's *inputs* (one tensor)."""
    import torch

    wanted = {k: v for k, v in inputs.items() if k in ("pixel_values", "pixel_attention_mask", "image_grid_thw")}
    with torch.inference_mode():
        features = captioner.model.model.get_image_features(**wanted).pooler_output
    return features if isinstance(features, torch.Tensor) else torch.cat(list(features))
