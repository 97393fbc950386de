"""LLaVA-class captioning (``LlavaForConditionalGeneration``): llava-1.5, JoyCaption (fancyfeast/llama-joycaption-*).

A CLIP/SigLIP vision tower, a projector and a Llama-style language model; the prompt
is a chat turn rendered with the processor's template, each ``<image>`` expanded to a
fixed number of image tokens.  Everything else is :class:`~.chat_vlm.PromptedVLMFamily`.
"""

from __future__ import annotations

from .chat_vlm import PromptedVLMFamily

__all__ = ["FAMILY", "LlavaFamily"]


class LlavaFamily(PromptedVLMFamily):
    """LLaVA / JoyCaption: chat prompt, fixed image tokens, Llama language model."""

    id = "llava"
    # LLaVA-1.5's own scripts: full fine-tuning 2e-5, LoRA 2e-4 (finetune.sh, finetune_lora.sh);
    # QLoRA: the QLoRA paper (1e-4 to 2e-4).
    published_lr = {"full": (2e-5, 2e-5), "lora": (2e-4, 2e-4), "qlora": (1e-4, 2e-4)}
    published_lr_source = "LLaVA-1.5"
    model_types = ("llava",)
    examples = ("llava-hf/llava-1.5-7b-hf", "fancyfeast/llama-joycaption-beta-one-hf-llava")
    # int8 is faster with the same captions (docs/optimization-notes.md, "int8 per vision-language family").
    cpu_int8_eligible = True


FAMILY = LlavaFamily()
