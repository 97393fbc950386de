"""Idefics3 / SmolVLM captioning (``Idefics3ForConditionalGeneration``, ``SmolVLMForConditionalGeneration``).

The processor takes one list of images per prompt and may split a large image into
tiles plus a global image (more image tokens per photo, and a ``pixel_attention_mask``);
the language model lives at ``model.text_model``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .chat_vlm import PromptedVLMFamily

__all__ = ["FAMILY", "Idefics3Family"]


class Idefics3Family(PromptedVLMFamily):
    """Idefics3 / SmolVLM: chat prompt, image tiles, pixel-shuffled SigLIP features."""

    id = "idefics3"
    model_types = ("idefics3", "smolvlm")
    examples = ("HuggingFaceTB/SmolVLM-256M-Instruct", "HuggingFaceM4/Idefics3-8B-Llama3")
    language_model_path = r"model\.text_model"

    def processor_images(self, images: Sequence[Any]) -> list[Any]:
        return [[image] for image in images]  # one image list per prompt


FAMILY = Idefics3Family()
