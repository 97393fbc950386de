"""BLIP captioning (``BlipForConditionalGeneration``): blip-image-captioning-base/-large.

BLIP's ``generate`` is custom: it replaces ``input_ids[:, 0]`` with the
decoder BOS token (``[DEC]``) *in place*, drops the last prompt token (the
tokenizer's trailing ``[SEP]``) and stops at ``sep_token_id``, not at
``eos_token_id``.  The captioner therefore passes ``[CLS] prompt [SEP]`` (or
nothing, for unconditional captions), clones ``input_ids`` before each call
and scores/strips with ``sep_token_id`` as EOS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..base import HFCaptioner

if TYPE_CHECKING:
    from PIL import Image

    from ..registry import LoadContext

__all__ = ["DEFAULT_MODEL", "BlipCaptioner", "load"]

#: The model used when none is configured (~990 MB; BLIP-large works with the same code).
DEFAULT_MODEL = "Salesforce/blip-image-captioning-base"


class BlipCaptioner(HFCaptioner):
    """Captioner for ``BlipForConditionalGeneration``."""

    family = "blip"
    mutated_inputs = ("input_ids",)

    def _encode(self, images: Sequence[Image.Image], prompt: str | None) -> dict[str, Any]:
        import torch

        inputs: dict[str, Any] = {"pixel_values": self._pixel_values(images)}
        if prompt:
            ids = self._tokenize_prompt(prompt)  # [CLS] prompt [SEP]
            input_ids = torch.tensor([ids], dtype=torch.long).repeat(len(images), 1)
            inputs["input_ids"] = input_ids
            inputs["attention_mask"] = torch.ones_like(input_ids)
        return inputs

    def _eos_token_ids(self) -> list[int]:
        # BlipForConditionalGeneration.generate stops at sep_token_id.
        return [int(self.model.config.text_config.sep_token_id)]


def load(ctx: LoadContext) -> BlipCaptioner:
    """Load a BLIP checkpoint described by ``ctx``."""
    from transformers import AutoTokenizer, BlipForConditionalGeneration, BlipProcessor

    processor = ctx.load_pretrained(BlipProcessor, "processor (preprocessor_config.json / tokenizer)")
    tokenizer = processor.tokenizer if processor is not None else ctx.load_pretrained(AutoTokenizer, "tokenizer")
    model = ctx.load_model(BlipForConditionalGeneration)
    return ctx.finish(BlipCaptioner, model, processor, tokenizer)
