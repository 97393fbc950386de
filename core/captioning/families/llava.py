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
    model_types = ("llava",)
    examples = ("llava-hf/llava-1.5-7b-hf", "fancyfeast/llama-joycaption-beta-one-hf-llava")
    # int8 is faster with the same captions (docs/optimization-notes.md, "int8 per vision-language family").
    cpu_int8_eligible = True


FAMILY = LlavaFamily()
