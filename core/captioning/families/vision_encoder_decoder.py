"""Vision encoder-decoder captioning (``VisionEncoderDecoderModel``), e.g. nlpconnect/vit-gpt2-image-captioning.

These checkpoints usually ship an image processor and a tokenizer but no
processor config, so both are loaded separately.  A prompt becomes the
decoder prefix after ``decoder_start_token_id``.

Training: labels = ``caption EOS``; ``decoder_input_ids`` = ``decoder_start_token_id``
+ labels[:-1], built here so checkpoints without a ``pad_token_id`` (which
``shift_tokens_right`` needs) train too.  A frozen encoder's output is cached and
passed back as ``encoder_outputs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..captioner import HFCaptioner
from .base import ModelFamily, TrainingNotSupportedError, pad_rows

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from ..load_context import LoadContext

__all__ = ["FAMILY", "VisionEncoderDecoderCaptioner", "VisionEncoderDecoderFamily"]


class VisionEncoderDecoderCaptioner(HFCaptioner):
    """Captioner for ``VisionEncoderDecoderModel`` (ViT-GPT2, BEiT-RoBERTa, ...)."""

    def __init__(self, model: Any, processor: Any, tokenizer: Any, **kwargs: Any) -> None:
        super().__init__(model, processor, tokenizer, **kwargs)
        self.image_processor = processor  # a bare image processor: there is no processor.image_processor

    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]

    def decoder_start_token_id(self) -> int | None:
        start = self.model.generation_config.decoder_start_token_id
        if start is None:
            start = self.model.config.decoder_start_token_id
        return None if start is None else int(start)

    def _encode(self, images: Sequence[Image.Image], prompt: str | None) -> dict[str, Any]:
        import torch

        inputs: dict[str, Any] = {"pixel_values": self.pixel_values(images)}
        if prompt:
            ids = [self.decoder_start_token_id(), *self.tokenize_prompt(prompt, add_special_tokens=False)]
            inputs["decoder_input_ids"] = torch.tensor([ids], dtype=torch.long).repeat(len(images), 1)
        return inputs

    def eos_token_ids(self) -> list[int]:
        ids = super().eos_token_ids()
        if not ids and self.model.config.decoder.eos_token_id is not None:
            ids = [int(self.model.config.decoder.eos_token_id)]
        return ids


class VisionEncoderDecoderFamily(ModelFamily):
    """Image encoder (ViT, DeiT, BEiT, ...) + text decoder (GPT-2, RoBERTa, ...)."""

    id = "vision-encoder-decoder"
    # ViT-GPT2 captioning fine-tunes (Hugging Face's seq2seq examples: 5e-5, and 1e-5 to 5e-5 commonly);
    # LoRA and QLoRA: the LoRA and QLoRA papers' rates.
    published_lr = {"full": (1e-5, 5e-5), "lora": (1e-4, 5e-4), "qlora": (1e-4, 2e-4)}
    published_lr_source = "ViT-GPT2"
    model_types = ("vision-encoder-decoder",)
    examples = ("nlpconnect/vit-gpt2-image-captioning",)
    cpu_int8_eligible = True
    trainable = True
    supports_vision_cache = True
    lora_text_targets = ("c_attn",)  # GPT-2 decoder fused qkv
    # ViT/DeiT/BEiT attention is q_proj/v_proj in transformers 5 (query/value before).
    lora_vision_targets = ("q_proj", "v_proj", "query", "value")

    def load(self, ctx: LoadContext) -> VisionEncoderDecoderCaptioner:
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
                    value = getattr(model.config.decoder,
                                    "bos_token_id" if name == "decoder_start_token_id" else name, None)
                setattr(gen, name, value)
        if gen.pad_token_id is None:
            gen.pad_token_id = gen.eos_token_id
        return ctx.finish(VisionEncoderDecoderCaptioner, model, image_processor, tokenizer)

    def vision_tower(self, model: Any) -> Any:
        return model.encoder

    def encode_training_batch(self, captioner: HFCaptioner, captions: list[str], max_length: int) -> dict[str, Any]:
        assert isinstance(captioner, VisionEncoderDecoderCaptioner)
        start = captioner.decoder_start_token_id()
        if start is None:
            raise TrainingNotSupportedError("the model has no decoder_start_token_id; set it in its config.json")
        eos = self.caption_end_token(captioner)
        targets = [[*ids[: max_length - 1], eos] for ids in self.caption_token_ids(captioner, captions)]
        return {"decoder_input_ids": pad_rows([[start, *t[:-1]] for t in targets], self.pad_token(captioner, eos)),
                "labels": pad_rows(targets, -100)}

    def loss(self, model: Any, batch: dict[str, Any]) -> Any:
        """Loss from pixels, or from cached encoder outputs (``image_embeds``)."""
        text = {"decoder_input_ids": batch["decoder_input_ids"], "labels": batch["labels"]}
        image_embeds = batch.get("image_embeds")
        if image_embeds is None:
            return model(pixel_values=batch["pixel_values"], **text).loss
        from transformers.modeling_outputs import BaseModelOutput

        return model(encoder_outputs=BaseModelOutput(last_hidden_state=image_embeds), **text).loss


FAMILY = VisionEncoderDecoderFamily()
