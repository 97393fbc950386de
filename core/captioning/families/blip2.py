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

Training batches start with the captioner's own prefix (:meth:`Blip2Captioner.prompt_ids`):

* decoder-only LM (OPT) — ``<image> x num_query_tokens, BOS, caption, EOS``; labels
  are aligned with the input ids (``forward`` keeps the last ``labels.size(1)`` logits
  and its causal-LM loss shifts by one) and are -100 on the placeholders, BOS and padding;
* encoder-decoder LM (Flan-T5) — the encoder input is the prefix (placeholders +
  ``</s>``); labels = ``caption EOS`` go to the T5 decoder, which shifts them right
  behind ``decoder_start_token_id`` itself.

With a frozen vision tower its output is cached; the Q-Former and the projection
(trainable) still run in :meth:`Blip2Family.loss`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..captioner import HFCaptioner
from .base import ModelFamily, pad_rows

if TYPE_CHECKING:
    from PIL import Image

    from ..load_context import LoadContext

__all__ = ["FAMILY", "Blip2Captioner", "Blip2Family"]

#: Language models whose attention projections are called ``q``/``k``/``v``/``o`` (T5 family).
_T5_LIKE = frozenset({"t5", "mt5", "umt5"})


class Blip2Captioner(HFCaptioner):
    """Captioner for ``Blip2ForConditionalGeneration`` (OPT and T5 language models)."""

    def image_placeholder_ids(self) -> list[int]:
        """The ``<image>`` placeholders the model replaces with the Q-Former outputs."""
        config = self.model.config
        return [int(config.image_token_id)] * int(config.num_query_tokens)

    def prompt_ids(self, prompt: str | None) -> list[int]:
        """Text ids of the prompt as the language model expects them (BOS added for decoder-only LMs)."""
        config = self.model.config
        text_ids = self.tokenize_prompt(prompt or "")
        bos = getattr(config.text_config, "bos_token_id", None)  # T5 configs in transformers 5 have none
        if not config.text_config.is_encoder_decoder and bos is not None and (not text_ids or text_ids[0] != bos):
            text_ids = [int(bos), *text_ids]
        return text_ids

    def _encode(self, images: Sequence[Image.Image], prompt: str | None) -> dict[str, Any]:
        import torch

        ids = self.image_placeholder_ids() + self.prompt_ids(prompt)
        input_ids = torch.tensor([ids], dtype=torch.long).repeat(len(images), 1)
        return {
            "pixel_values": self.pixel_values(images),
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
        }


class Blip2Family(ModelFamily):
    """BLIP-2: vision tower + Q-Former + an OPT or Flan-T5 language model."""

    id = "blip-2"
    # BLIP-2's COCO captioning fine-tune (1e-5, LAVIS); LoRA: Hugging Face's PEFT BLIP-2 notebook (5e-5)
    # to the LoRA paper's 2e-4; QLoRA: the QLoRA paper.
    published_lr = {"full": (1e-5, 5e-5), "lora": (5e-5, 2e-4), "qlora": (1e-4, 2e-4)}
    published_lr_source = "BLIP-2"
    model_types = ("blip-2",)
    examples = ("Salesforce/blip2-*",)
    # Not int8 under "auto": billion-parameter LLMs such as OPT have activation
    # outliers that dynamic int8 handles badly (LLM.int8()); not validated here.
    cpu_int8_eligible = False
    trainable = True
    supports_vision_cache = True
    # The language model's attention, not the Q-Former (query/value) nor the vision tower (qkv).
    lora_text_targets = ("q_proj", "v_proj")
    lora_vision_targets = ("qkv",)

    def load(self, ctx: LoadContext) -> Blip2Captioner:
        from transformers import Blip2ForConditionalGeneration, Blip2Processor

        if getattr(ctx.config, "image_token_id", None) is None:
            raise ctx.fail(ValueError("config.json has no image_token_index; the checkpoint predates the "
                                      "current BLIP-2 format, use an up-to-date conversion"), "config")
        processor = ctx.load_pretrained(Blip2Processor, "processor (preprocessor_config.json / tokenizer)")
        model = ctx.load_model(Blip2ForConditionalGeneration)
        return ctx.finish(Blip2Captioner, model, processor, processor.tokenizer)

    def lora_targets(self, model_config: Any | None = None, *, train_vision: bool = False) -> list[str] | str:
        text_type = getattr(getattr(model_config, "text_config", None), "model_type", None)
        text = ["q", "v"] if text_type in _T5_LIKE else list(self.lora_text_targets)
        return text + (list(self.lora_vision_targets) if train_vision else [])

    def vision_tower(self, model: Any) -> Any:
        return model.vision_model

    def encode_training_batch(self, captioner: HFCaptioner, captions: list[str], max_length: int) -> dict[str, Any]:
        assert isinstance(captioner, Blip2Captioner)
        eos = self.caption_end_token(captioner)
        pad = self.pad_token(captioner, eos)
        caption_ids = self.caption_token_ids(captioner, captions)
        placeholders = captioner.image_placeholder_ids()
        prompt = captioner.prompt_ids(None)  # as the captioner generates with no prompt
        if captioner.model.config.text_config.is_encoder_decoder:
            input_ids = pad_rows([placeholders + prompt] * len(captions), pad)
            targets = [[*ids[: max_length - 1], eos] for ids in caption_ids]
            return {"input_ids": input_ids, "attention_mask": input_ids.new_ones(input_ids.shape),
                    "labels": pad_rows(targets, -100)}
        room = max(1, max_length - len(prompt) - 1)  # max_length counts the text tokens (BOS ... EOS)
        prefix = placeholders + prompt
        rows = [prefix + [*ids[:room], eos] for ids in caption_ids]
        input_ids = pad_rows(rows, pad)
        mask = pad_rows([[1] * len(r) for r in rows], 0)
        labels = input_ids.masked_fill(mask == 0, -100)
        labels[:, : len(prefix)] = -100
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}

    def loss(self, model: Any, batch: dict[str, Any]) -> Any:
        """Loss from pixels, or from cached ``image_embeds`` (the vision tower's last hidden state).

        With ``image_embeds`` only the vision tower is skipped: the Q-Former and the
        projection run here as in ``Blip2ForConditionalGeneration.get_image_features``
        and the model's own forward (``mm_encoder_outputs``) computes the loss, so it
        equals ``model(pixel_values=...).loss``.
        """
        text = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
        image_embeds = batch.get("image_embeds")
        if image_embeds is None:
            return model(pixel_values=batch["pixel_values"], **text).loss
        import torch
        from transformers.models.blip_2.modeling_blip_2 import (
            BaseModelOutputWithVisionQformerOutputs,
        )

        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        query_tokens = model.query_tokens.expand(image_embeds.shape[0], -1, -1)
        qformer = model.qformer(query_embeds=query_tokens, encoder_hidden_states=image_embeds,
                                encoder_attention_mask=image_mask, return_dict=True)
        query_output = qformer.last_hidden_state
        if query_output.dtype != image_embeds.dtype:  # the Q-Former is kept in fp32
            query_output = query_output.to(image_embeds.dtype)
        image = BaseModelOutputWithVisionQformerOutputs(
            last_hidden_state=image_embeds, pooler_output=model.language_projection(query_output),
            qformer_outputs=qformer)
        return model(pixel_values=None, mm_encoder_outputs={"image": image}, **text).loss


FAMILY = Blip2Family()
