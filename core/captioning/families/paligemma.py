"""PaliGemma captioning (``PaliGemmaForConditionalGeneration``): google/paligemma(2)-*.

No chat template: the prompt is a task text such as ``"caption en"``; the processor
puts the image tokens and BOS before it and ``\\n`` after it.  The prefix attends
bidirectionally (``token_type_ids`` 0) and the caption causally (1), which is what the
processor's ``suffix=`` builds for fine-tuning; :meth:`training_batch` builds the same
rows from the captioner's own prompt inputs.  Positions are 1-based inside the model,
so none are passed.
"""

from __future__ import annotations

from typing import ClassVar

from ..captioner import HFCaptioner
from .chat_vlm import PromptedVLMFamily

__all__ = ["DEFAULT_TASK", "FAMILY", "PaliGemmaFamily"]

#: PaliGemma's captioning task prefix (the mix checkpoints also know "describe en").
DEFAULT_TASK = "caption en"


class PaliGemmaFamily(PromptedVLMFamily):
    """PaliGemma: SigLIP + Gemma, task-prefix prompt, prefix-LM attention."""

    id = "paligemma"
    # PaliGemma transfer (big_vision configs and Hugging Face's notebook: 1e-5 to 3e-5, vision frozen);
    # LoRA and QLoRA: the LoRA and QLoRA papers' rates.
    published_lr = {"full": (1e-5, 3e-5), "lora": (1e-4, 2e-4), "qlora": (1e-4, 2e-4)}
    published_lr_source = "PaliGemma"
    model_types = ("paligemma",)
    examples = ("google/paligemma2-3b-mix-224", "google/paligemma-3b-mix-224")
    caption_token_types: ClassVar[dict[str, int]] = {"token_type_ids": 1}
    positions_from_mask = False
    stacked_image_features = True  # the forward takes the features as one (images, tokens, hidden) tensor

    def default_prompt(self, captioner: HFCaptioner) -> str | None:
        return DEFAULT_TASK

    def build_prompt(self, captioner: HFCaptioner, prompt_text: str | None) -> str:
        return prompt_text or ""


FAMILY = PaliGemmaFamily()
