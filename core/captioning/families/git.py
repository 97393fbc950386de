"""GIT captioning (``GitForCausalLM``): microsoft/git-base(-coco|-textcaps), git-large-*.

GIT is a decoder-only model that reads the image embeddings as a prefix; the
text part starts with ``[CLS]`` (its BOS) and ends at ``[SEP]`` (its EOS).  A
prompt is appended after ``[CLS]`` without the tokenizer's trailing
``[SEP]``, as in the GIT model card.

Training batches are ``[CLS] caption [SEP]`` (model bos ... eos); ``GitForCausalLM``
drops the first label and shifts, so labels = input ids with padding masked.  GIT's
forward takes pixels only, so its image encoder always runs (no vision cache).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..captioner import HFCaptioner
from .base import ModelFamily, pad_rows

if TYPE_CHECKING:
    from PIL import Image

    from ..load_context import LoadContext

__all__ = ["FAMILY", "GitCaptioner", "GitFamily"]


def _bos(captioner: HFCaptioner) -> int:
    bos = captioner.model.config.bos_token_id
    return int(bos if bos is not None else captioner.tokenizer.cls_token_id)


class GitCaptioner(HFCaptioner):
    """Captioner for ``GitForCausalLM``."""

    def _encode(self, images: Sequence[Image.Image], prompt: str | None) -> dict[str, Any]:
        import torch

        ids = [_bos(self)] + (self.tokenize_prompt(prompt, add_special_tokens=False) if prompt else [])
        input_ids = torch.tensor([ids], dtype=torch.long).repeat(len(images), 1)
        return {
            "pixel_values": self.pixel_values(images),
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
        }


class GitFamily(ModelFamily):
    """GIT: image prefix + BERT-style text decoder."""

    id = "git"
    # GIT's captioning fine-tunes (1e-5 to 5e-5, the paper and Hugging Face's GIT tutorial); LoRA and
    # QLoRA: the LoRA and QLoRA papers' rates.
    published_lr = {"full": (1e-5, 5e-5), "lora": (1e-4, 5e-4), "qlora": (1e-4, 2e-4)}
    published_lr_source = "GIT"
    model_types = ("git",)
    examples = ("microsoft/git-*",)
    cpu_int8_eligible = True
    trainable = True
    lora_text_targets = ("query", "value")  # BERT-style text layers (the CLIP tower uses q_proj/v_proj)
    lora_vision_targets = ("q_proj", "v_proj")

    def load(self, ctx: LoadContext) -> GitCaptioner:
        from transformers import AutoProcessor, GitForCausalLM

        processor = ctx.load_pretrained(AutoProcessor, "processor (preprocessor_config.json / tokenizer)")
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None or getattr(processor, "image_processor", None) is None:
            raise ctx.fail(ValueError("the processor has no image processor or no tokenizer"), "processor")
        model = ctx.load_model(GitForCausalLM)
        return ctx.finish(GitCaptioner, model, processor, tokenizer)

    def vision_tower(self, model: Any) -> Any:
        return model.git.image_encoder

    def encode_training_batch(self, captioner: HFCaptioner, captions: list[str], max_length: int) -> dict[str, Any]:
        eos = self.caption_end_token(captioner)
        bos = _bos(captioner)
        rows = [[bos, *ids[: max_length - 2], eos] for ids in self.caption_token_ids(captioner, captions)]
        input_ids = pad_rows(rows, self.pad_token(captioner, eos))
        mask = pad_rows([[1] * len(r) for r in rows], 0)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": input_ids.masked_fill(mask == 0, -100)}


FAMILY = GitFamily()
