"""Checks shared by the runtime tests: an int8 caption must not depend on its batch-mates."""

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
