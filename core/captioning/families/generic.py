"""Any other ``AutoModelForImageTextToText`` model (Kosmos-2, Pix2Struct, InstructBLIP, ...).

Florence-2, LLaVA, Qwen2-VL, Idefics3/SmolVLM and PaliGemma have families of their own
(trainable; :mod:`.chat_vlm`).  The rest caption when *asked* to, so a prompt is always used:

* Chat models get a single user turn with the image and the instruction,
  rendered with the processor's chat template (``add_generation_prompt``);
  the default instruction is :data:`DEFAULT_INSTRUCTION`.
* Anything else gets the prompt text as is.

Decoder-only models are padded on the left (image token counts can differ
per image, e.g. Qwen-VL's dynamic resolution), so every row ends where
generation starts.  Remote code (``trust_remote_code``) is never enabled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..captioner import HFCaptioner
from .base import ModelFamily
from .chat_vlm import DEFAULT_INSTRUCTION, load_image_text_to_text

if TYPE_CHECKING:
    from PIL import Image

    from ..load_context import LoadContext

__all__ = ["DEFAULT_INSTRUCTION", "FAMILY", "GenericCaptioner", "GenericFamily"]


class GenericCaptioner(HFCaptioner):
    """Captioner for prompt-driven image-text-to-text models."""

    def _default_prompt(self) -> str | None:
        return DEFAULT_INSTRUCTION

    def _uses_chat_template(self) -> bool:
        return bool(getattr(self.processor, "chat_template", None))

    def _render(self, prompt: str) -> str:
        if not self._uses_chat_template():
            return prompt
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _encode(self, images: Sequence[Image.Image], prompt: str | None) -> dict[str, Any]:
        text = self._render(prompt or "")
        # The processor tokenizes (and expands image placeholders) in one
        # call, so the whole call holds the tokenizer lock.
        with self._tokenizer_lock:
            encoded = self.processor(images=list(images), text=[text] * len(images), return_tensors="pt",
                                     padding=True)
        return dict(encoded)


class GenericFamily(ModelFamily):
    """Fallback for ``AutoModelForImageTextToText`` types without a family of their own.

    Not trainable yet, and left in fp32 by ``optimize="auto"`` (LLM-based models;
    dynamic int8 was not validated on them).
    """

    id = "generic"
    examples = ("Kosmos-2", "Pix2Struct", "InstructBLIP")
    prompt_style = "instruction"
    preset_prompts = {}  # every preset is sent as its instruction

    def load(self, ctx: LoadContext) -> GenericCaptioner:
        from transformers import AutoProcessor

        processor = ctx.load_pretrained(AutoProcessor, "processor (processor_config.json / tokenizer)")
        return load_image_text_to_text(ctx, processor, GenericCaptioner)


FAMILY = GenericFamily()
