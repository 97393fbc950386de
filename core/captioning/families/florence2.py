"""Florence-2 captioning (``Florence2ForConditionalGeneration``, native in transformers 5): microsoft/Florence-2-*.

An encoder-decoder model (DaViT vision + BART) prompted with a task token: the
processor expands ``"<CAPTION>"`` (default; ``"<DETAILED_CAPTION>"`` and
``"<MORE_DETAILED_CAPTION>"`` give longer text) into its instruction and puts the image
tokens before it.  Training: the encoder input is exactly that prompt (the captioner's
own preprocessed inputs), the caption goes to the decoder as labels, ``[BOS] caption
EOS`` where generation forces a BOS first (real checkpoints) and ``caption EOS``
otherwise; the model shifts labels behind ``decoder_start_token_id`` itself.  The
frozen-vision cache (:mod:`.chat_vlm`) feeds the encoder the embeddings its forward would
build: prompt embeddings with the cached DaViT + projector features at the image tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from ..captioner import HFCaptioner
from .base import pad_rows
from .chat_vlm import PromptedVLMFamily, RowPrompts

if TYPE_CHECKING:
    from ..presets import Preset

__all__ = ["DEFAULT_TASK", "FAMILY", "Florence2Family"]

#: Florence-2's captioning task token.
DEFAULT_TASK = "<CAPTION>"


class Florence2Family(PromptedVLMFamily):
    """Florence-2: task-token prompt, BART encoder-decoder over DaViT features."""

    id = "florence2"
    # Hugging Face's Florence-2 fine-tuning blog (1e-6, vision frozen) to 1e-5; LoRA: 5e-6 (Roboflow's
    # notebook) to 1e-4; QLoRA: the QLoRA paper.
    published_lr = {"full": (1e-6, 1e-5), "lora": (5e-6, 1e-4), "qlora": (1e-4, 2e-4)}
    published_lr_source = "Florence-2"
    model_types = ("florence2",)
    examples = ("microsoft/Florence-2-base", "microsoft/Florence-2-large")
    # Not int8: DaViT's window attention feeds its linears (windows x batch, tokens, features), and the
    # per-image int8 Linear makes one call per window (see docs/optimization-notes.md,
    # "int8 per vision-language family").
    cpu_int8_eligible = False
    # BART attention and feed-forward layers.
    lora_text_targets: ClassVar[tuple[str, ...]] = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")

    #: Presets are task tokens, the only prompts Florence-2 knows (it has no instructions).
    preset_prompts = {"short": "<CAPTION>", "alt_text": "<CAPTION>", "detailed": "<DETAILED_CAPTION>",
                      "more_detailed": "<MORE_DETAILED_CAPTION>"}

    def preset_prompt(self, preset: Preset, *, model_type: str | None = None) -> str | None:
        """The preset's task token; the others raise (Florence-2 follows no instructions)."""
        if preset.id in self.preset_prompts:
            return self.preset_prompts[preset.id]
        from ..presets import UnsupportedPresetError

        raise UnsupportedPresetError(
            f"Florence-2 models follow task tokens, not instructions; presets it supports: "
            f"{', '.join(f'{p} ({t})' for p, t in self.preset_prompts.items())}")

    def default_prompt(self, captioner: HFCaptioner) -> str | None:
        return DEFAULT_TASK

    def build_prompt(self, captioner: HFCaptioner, prompt_text: str | None) -> str:
        return prompt_text or DEFAULT_TASK

    def encode_training_batch(self, captioner: HFCaptioner, captions: list[str], max_length: int,
                              prompts: list[str | None] | None = None) -> dict[str, Any]:
        """Decoder labels: ``[BOS] caption EOS`` (BOS where generation forces it), padded with -100;
        *prompts* (per example: the preset's task token) go to the encoder in :meth:`training_batch`."""
        eos = self.caption_end_token(captioner)
        model = captioner.model
        forced = getattr(model.generation_config, "forced_bos_token_id", None)
        if forced is None:
            forced = getattr(model.config.text_config, "forced_bos_token_id", None)
        start = [int(forced)] if forced is not None else []
        room = max(1, max_length - 1 - len(start))
        rows = [[*start, *ids[:room], eos] for ids in self.caption_token_ids(captioner, captions)]
        text: dict[str, Any] = {"labels": pad_rows(rows, -100)}
        if prompts is not None:
            text["prompts"] = RowPrompts(prompts)
        return text

    def training_batch(self, captioner: HFCaptioner, text: dict[str, Any], images: list[Any] | None,
                       image_embeds: Any | None) -> dict[str, Any]:
        if image_embeds is not None:  # the frozen-vision cache: prompt tokens + "image_features"
            return {**self.cached_prompt_inputs(captioner, image_embeds), "labels": text["labels"]}
        return {**self.prompt_inputs(captioner, images or [], text.get("prompts")), "labels": text["labels"]}

    def loss_with_image_features(self, model: Any, batch: dict[str, Any], features: list[Any]) -> Any:
        """The encoder input as Florence-2's forward builds it (prompt embeddings, the image features
        scattered over the image tokens), passed as ``inputs_embeds``: its forward takes no features."""
        import torch

        input_ids = batch.pop("input_ids")
        embeds = model.get_input_embeddings()(input_ids)
        image_features = torch.stack(features).to(embeds.device, embeds.dtype)
        mask = model.model.get_placeholder_mask(input_ids, inputs_embeds=embeds, image_features=image_features)
        return model(**batch, inputs_embeds=embeds.masked_scatter(mask, image_features)).loss


FAMILY = Florence2Family()
