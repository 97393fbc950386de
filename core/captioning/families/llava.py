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
    # Measured (benchmarks/caption_model_speed.py --family llava; random weights, CLIP ViT-B/16 224 px +
    # 6-layer 512-wide Llama, 144M): int8 1.3-2.2x the fp32 batch, same captions 4/4.
    cpu_int8_eligible = True


FAMILY = LlavaFamily()
