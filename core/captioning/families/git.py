"""GIT captioning (``GitForCausalLM``): microsoft/git-base(-coco|-textcaps), git-large-*.

GIT is a decoder-only model that reads the image embeddings as a prefix; the
text part starts with ``[CLS]`` (its BOS) and ends at ``[SEP]`` (its EOS).  A
prompt is appended after ``[CLS]`` without the tokenizer's trailing
``[SEP]``, as in the GIT model card.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..base import HFCaptioner

if TYPE_CHECKING:
    from PIL import Image

    from ..registry import LoadContext

__all__ = ["GitCaptioner", "load"]


class GitCaptioner(HFCaptioner):
    """Captioner for ``GitForCausalLM``."""

    family = "git"

    def _encode(self, images: Sequence[Image.Image], prompt: str | None) -> dict[str, Any]:
        import torch

        bos = self.model.config.bos_token_id
        if bos is None:
            bos = self.tokenizer.cls_token_id
        ids = [int(bos)] + (self._tokenize_prompt(prompt, add_special_tokens=False) if prompt else [])
        input_ids = torch.tensor([ids], dtype=torch.long).repeat(len(images), 1)
        return {
            "pixel_values": self._pixel_values(images),
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
        }


def load(ctx: LoadContext) -> GitCaptioner:
    """Load a GIT checkpoint described by ``ctx``."""
    from transformers import AutoProcessor, GitForCausalLM

    processor = ctx.load_pretrained(AutoProcessor, "processor (preprocessor_config.json / tokenizer)")
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None or getattr(processor, "image_processor", None) is None:
        raise ctx.fail(ValueError("the processor has no image processor or no tokenizer"), "processor")
    model = ctx.load_model(GitForCausalLM)
    return ctx.finish(GitCaptioner, model, processor, tokenizer)
