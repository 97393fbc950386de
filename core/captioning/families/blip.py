"""BLIP captioning (``BlipForConditionalGeneration``): blip-image-captioning-base/-large.

BLIP's ``generate`` is custom: it replaces ``input_ids[:, 0]`` with the
decoder BOS token (``[DEC]``) *in place*, drops the last prompt token (the
tokenizer's trailing ``[SEP]``) and stops at ``sep_token_id``, not at
``eos_token_id``.  The captioner therefore passes ``[CLS] prompt [SEP]`` (or
nothing, for unconditional captions), clones ``input_ids`` before each call
and scores/strips with ``sep_token_id`` as EOS.

Training batches are ``[DEC] caption [SEP]``: the tokenizer starts with ``[CLS]``
but ``generate`` starts from ``[DEC]`` (bos), so the first id is replaced; labels =
input ids with padding masked (BLIP's text decoder shifts them itself).  A frozen
vision tower's output is cached and fed to the text decoder as
``encoder_hidden_states``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..captioner import HFCaptioner
from .base import ModelFamily

if TYPE_CHECKING:
    from PIL import Image

    from ..load_context import LoadContext

__all__ = ["FAMILY", "BlipCaptioner", "BlipFamily"]


class BlipCaptioner(HFCaptioner):
    """Captioner for ``BlipForConditionalGeneration``."""

    mutated_inputs = ("input_ids",)

    def _encode(self, images: Sequence[Image.Image], prompt: str | None) -> dict[str, Any]:
        import torch

        inputs: dict[str, Any] = {"pixel_values": self.pixel_values(images)}
        if prompt:
            ids = self.tokenize_prompt(prompt)  # [CLS] prompt [SEP]
            input_ids = torch.tensor([ids], dtype=torch.long).repeat(len(images), 1)
            inputs["input_ids"] = input_ids
            inputs["attention_mask"] = torch.ones_like(input_ids)
        return inputs

    def eos_token_ids(self) -> list[int]:
        # BlipForConditionalGeneration.generate stops at sep_token_id.
        return [int(self.model.config.text_config.sep_token_id)]


class BlipFamily(ModelFamily):
    """BLIP: the default captioner; small enough for int8 on the CPU."""

    id = "blip"
    model_types = ("blip",)
    examples = ("Salesforce/blip-image-captioning-*",)
    cpu_int8_eligible = True
    sdpa_vision_patch = True
    trainable = True
    supports_vision_cache = True
    # A restyle needs the text decoder's attention *and* feed-forward layers (query/key/value + every
    # "dense"); attention alone at a low rate did not learn it (README "LoRA defaults").
    lora_text_targets = ("query", "key", "value", "dense")
    lora_vision_targets = ("qkv",)
    lora_defaults = {"r": 16, "alpha": 32, "dropout": 0.1, "lr": 3e-3, "targets": None}
    # BLIP's COCO captioning fine-tune (LAVIS: 1e-5; 5e-5 in Hugging Face's BLIP tutorials); LoRA and
    # QLoRA have no BLIP recipe of their own: the LoRA and QLoRA papers' rates.
    published_lr = {"full": (1e-5, 5e-5), "lora": (1e-4, 5e-4), "qlora": (1e-4, 2e-4)}
    published_lr_source = "BLIP"

    def load(self, ctx: LoadContext) -> BlipCaptioner:
        from transformers import AutoTokenizer, BlipForConditionalGeneration, BlipProcessor

        processor = ctx.load_pretrained(BlipProcessor, "processor (preprocessor_config.json / tokenizer)")
        tokenizer = processor.tokenizer if processor is not None else ctx.load_pretrained(AutoTokenizer, "tokenizer")
        model = ctx.load_model(BlipForConditionalGeneration)
        return ctx.finish(BlipCaptioner, model, processor, tokenizer)

    def vision_tower(self, model: Any) -> Any:
        return model.vision_model

    def encode_training_batch(self, captioner: HFCaptioner, captions: list[str], max_length: int,
                              prompts: list[str | None] | None = None) -> dict[str, Any]:
        """``[DEC] caption [SEP]``; with *prompts* (a preset's or template's prefix, per caption)
        ``[DEC] prompt caption [SEP]`` with the prompt masked out of the labels: generation
        with that prompt starts the same way (``[CLS] prompt`` with ``[CLS]`` -> ``[DEC]``)."""
        if prompts is not None and any(prompts):
            return self._prompted_batch(captioner, captions, max_length, prompts)
        enc = captioner.tokenizer(captions, padding="longest", truncation=True, max_length=max_length,
                                  return_tensors="pt")
        input_ids = enc["input_ids"].clone()
        input_ids[:, 0] = captioner.model.config.text_config.bos_token_id  # [CLS] -> [DEC], as generate() starts
        mask = enc["attention_mask"]
        return {"input_ids": input_ids, "attention_mask": mask, "labels": input_ids.masked_fill(mask == 0, -100)}

    def _prompted_batch(self, captioner: HFCaptioner, captions: list[str], max_length: int,
                        prompts: list[str | None]) -> dict[str, Any]:
        from .base import pad_rows

        bos = int(captioner.model.config.text_config.bos_token_id)
        sep = int(captioner.model.config.text_config.sep_token_id)
        caption_ids = self.caption_token_ids(captioner, captions)
        rows, label_rows = [], []
        for prompt, ids in zip(prompts, caption_ids, strict=True):
            prefix = captioner.tokenize_prompt(prompt, add_special_tokens=False) if prompt else []
            ids = ids[: max(1, max_length - 2 - len(prefix))]
            rows.append([bos, *prefix, *ids, sep])
            label_rows.append([-100] * (1 + len(prefix)) + [*ids, sep])
        pad = self.pad_token(captioner, 0)
        input_ids = pad_rows(rows, pad)
        mask = pad_rows([[1] * len(r) for r in rows], 0)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": pad_rows(label_rows, -100)}

    def loss(self, model: Any, batch: dict[str, Any]) -> Any:
        """Loss from pixels, or from cached ``image_embeds`` (then equal to ``model(pixel_values=...).loss``)."""
        image_embeds = batch.get("image_embeds")
        if image_embeds is None:
            image_embeds = model.vision_model(pixel_values=batch["pixel_values"]).last_hidden_state
        out = model.text_decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 encoder_hidden_states=image_embeds, labels=batch["labels"], reduction="mean")
        return out.loss


FAMILY = BlipFamily()
