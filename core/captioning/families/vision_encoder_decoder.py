"""Vision encoder-decoder captioning (``VisionEncoderDecoderModel``), e.g. nlpconnect/vit-gpt2-image-captioning.

These checkpoints usually ship an image processor and a tokenizer but no
processor config, so both are loaded separately.  A prompt becomes the
decoder prefix after ``decoder_start_token_id``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..base import HFCaptioner

if TYPE_CHECKING:
    from PIL import Image

    from ..registry import LoadContext

__all__ = ["VisionEncoderDecoderCaptioner", "load"]


class VisionEncoderDecoderCaptioner(HFCaptioner):
    """Captioner for ``VisionEncoderDecoderModel`` (ViT-GPT2, BEiT-RoBERTa, ...)."""

    family = "vision-encoder-decoder"

    def __init__(self, model: Any, processor: Any, tokenizer: Any, **kwargs: Any) -> None:
        super().__init__(model, processor, tokenizer, **kwargs)
        self.image_processor = processor

    def _encode(self, images: Sequence[Image.Image], prompt: str | None) -> dict[str, Any]:
        import torch

        inputs: dict[str, Any] = {"pixel_values": self._pixel_values(images, self.image_processor)}
        if prompt:
            start = self.model.generation_config.decoder_start_token_id
            if start is None:
                start = self.model.config.decoder_start_token_id
            ids = [int(start), *self._tokenize_prompt(prompt, add_special_tokens=False)]
            inputs["decoder_input_ids"] = torch.tensor([ids], dtype=torch.long).repeat(len(images), 1)
        return inputs

    def _eos_token_ids(self) -> list[int]:
        ids = super()._eos_token_ids()
        if not ids and self.model.config.decoder.eos_token_id is not None:
            ids = [int(self.model.config.decoder.eos_token_id)]
        return ids


def load(ctx: LoadContext) -> VisionEncoderDecoderCaptioner:
    """Load a VisionEncoderDecoder checkpoint described by ``ctx``."""
    from transformers import (
        AutoImageProcessor,
        AutoTokenizer,
        VisionEncoderDecoderModel,
    )

    image_processor = ctx.load_pretrained(AutoImageProcessor, "image processor (preprocessor_config.json)")
    tokenizer = ctx.load_pretrained(AutoTokenizer, "tokenizer")
    model = ctx.load_model(VisionEncoderDecoderModel)
    gen = model.generation_config
    # Old checkpoints keep these only in config.json; generate() needs them.
    for name in ("decoder_start_token_id", "pad_token_id", "eos_token_id"):
        if getattr(gen, name, None) is None:
            value = getattr(model.config, name, None)
            if value is None:
                value = getattr(model.config.decoder, "bos_token_id" if name == "decoder_start_token_id" else name,
                                None)
            setattr(gen, name, value)
    if gen.pad_token_id is None:
        gen.pad_token_id = gen.eos_token_id
    return ctx.finish(VisionEncoderDecoderCaptioner, model, image_processor, tokenizer)
