"""BLIP-2 captioning (``Blip2ForConditionalGeneration``) with OPT or Flan-T5 language models.

Inputs follow ``Blip2Processor``: ``num_query_tokens`` copies of the
``<image>`` placeholder (replaced inside the model by the Q-Former outputs),
then the tokenized prompt.  With no prompt the text part is what the
tokenizer makes of ``""``: ``</s>`` (BOS) for OPT, ``</s>`` (EOS, which the
T5 encoder expects at the end of its input) for Flan-T5.  For decoder-only
LMs a BOS is added when the tokenizer did not add one, matching what
``Blip2ForConditionalGeneration.generate`` does without ``input_ids``.

The ``<image>`` placeholder requires a checkpoint/processor converted with
``num_query_tokens`` (all current Salesforce/blip2-* repos are); older
conversions without it are rejected with a clear error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..base import HFCaptioner

if TYPE_CHECKING:
    from PIL import Image

    from ..registry import LoadContext

__all__ = ["Blip2Captioner", "load"]


class Blip2Captioner(HFCaptioner):
    """Captioner for ``Blip2ForConditionalGeneration`` (OPT and T5 language models)."""

    family = "blip2"

    def _encode(self, images: Sequence[Image.Image], prompt: str | None) -> dict[str, Any]:
        import torch

        config = self.model.config
        text_ids = self._tokenize_prompt(prompt or "")
        bos = getattr(config.text_config, "bos_token_id", None)  # T5 configs in transformers 5 have none
        if not config.text_config.is_encoder_decoder and bos is not None and (not text_ids or text_ids[0] != bos):
            text_ids = [int(bos), *text_ids]
        image_ids = [int(config.image_token_id)] * int(config.num_query_tokens)
        input_ids = torch.tensor([image_ids + text_ids], dtype=torch.long).repeat(len(images), 1)
        return {
            "pixel_values": self._pixel_values(images),
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
        }


def load(ctx: LoadContext) -> Blip2Captioner:
    """Load a BLIP-2 checkpoint described by ``ctx``."""
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    if getattr(ctx.config, "image_token_id", None) is None:
        raise ctx.fail(ValueError("config.json has no image_token_index; the checkpoint predates the "
                                  "current BLIP-2 format, use an up-to-date conversion"), "config")
    processor = ctx.load_pretrained(Blip2Processor, "processor (preprocessor_config.json / tokenizer)")
    model = ctx.load_model(Blip2ForConditionalGeneration)
    return ctx.finish(Blip2Captioner, model, processor, processor.tokenizer)
