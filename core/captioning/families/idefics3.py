"""Idefics3 / SmolVLM captioning (``Idefics3ForConditionalGeneration``, ``SmolVLMForConditionalGeneration``).

The processor takes one list of images per prompt and may split a large image into
tiles plus a global image (more image tokens per photo, and a ``pixel_attention_mask``);
the language model lives at ``model.text_model``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..input_size import ResizeTarget, size_dict
from .chat_vlm import PromptedVLMFamily

__all__ = ["FAMILY", "Idefics3Family"]


class Idefics3Family(PromptedVLMFamily):
    """Idefics3 / SmolVLM: chat prompt, image tiles, pixel-shuffled SigLIP features."""

    id = "idefics3"
    # Hugging Face's Idefics3/SmolVLM fine-tuning notebooks: LoRA and QLoRA 1e-4; full 1e-5 to 2e-5.
    published_lr = {"full": (1e-5, 2e-5), "lora": (1e-4, 1e-4), "qlora": (1e-4, 1e-4)}
    published_lr_source = "Idefics3/SmolVLM"
    model_types = ("idefics3", "smolvlm")
    examples = ("HuggingFaceTB/SmolVLM-256M-Instruct", "HuggingFaceM4/Idefics3-8B-Llama3")
    language_model_path = r"model\.text_model"
    projector_names = ("connector",)  # pixel shuffle + projection
    # int8 is faster with the same captions (docs/optimization-notes.md, "int8 per vision-language family").
    cpu_int8_eligible = True

    def processor_input_size(self, processor: Any, size: tuple[int, int]) -> ResizeTarget | None:
        """Longest side to ``size["longest_edge"]``, the other even (the processor's first resize;
        tiling, when on, works from that image)."""
        image_processor = getattr(processor, "image_processor", processor)
        edge = size_dict(image_processor).get("longest_edge")
        if not getattr(image_processor, "do_resize", True) or not edge:
            return super().processor_input_size(processor, size)
        from transformers.models.idefics3.image_processing_pil_idefics3 import (
            _resize_output_size_rescale_to_max_len,
        )

        height, width = _resize_output_size_rescale_to_max_len(size[1], size[0], max_len=edge)
        return ResizeTarget(width, height)

    def processor_images(self, images: Sequence[Any]) -> list[Any]:
        return [[image] for image in images]  # one image list per prompt


FAMILY = Idefics3Family()
