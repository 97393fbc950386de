"""Shrinking a photo to what a model's image processor makes of it, *before* the processor sees it.

A vision-language processor resizes every image to its model's resolution (a fixed
``height x width`` for SigLIP / Florence-2, a shortest edge for CLIP, a longest edge for
Idefics3, a pixel budget rounded to whole patches for Qwen2-VL).  Handing it a 24 MP
photo makes it convert and resample 24 MP in numpy; shrinking the photo first with
Pillow (``Image.resize`` with ``reducing_gap``: a cheap integer box reduction first, then
the processor's own filter) gives nearly the same pixels for a fraction of the time.

A family says what its processor does to an image of a given size
(:meth:`~core.captioning.families.chat_vlm.PromptedVLMFamily.processor_input_size`,
returning a :class:`ResizeTarget`); :func:`shrink_for_processor` does the shrinking.
Only ever *down*: an image already smaller than the target is left to the processor.

The JPEG decode before this (``core.imaging.load_model_input``) drafts at the DCT scale
for the family's input side (:meth:`~core.captioning.families.base.ModelFamily.model_input_side`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["REDUCING_GAP", "ResizeTarget", "processor_resample", "shrink_for_processor", "size_dict", "size_target"]

#: Pillow's ``reducing_gap``: reduce by an integer box factor while the image stays at least
#: this many times the target, then resample.  3.0 is Pillow's "indistinguishable from a
#: direct resize" setting (the processor's own resize resamples from the full image).
REDUCING_GAP = 3.0


@dataclass(frozen=True)
class ResizeTarget:
    """The size (width, height) the image processor resizes an image to.

    The photo is resized to exactly this size when that only shrinks it, so the
    processor's own resize becomes a no-op and the pixels went through one resampling,
    as they would in the processor.  For processors that keep the aspect ratio (CLIP's
    shortest edge, Idefics3's longest edge, Qwen2-VL's pixel budget) the aspect is kept
    up to their rounding; a fixed ``height x width`` (SigLIP, Florence-2) is squashed here
    as the processor would squash it (shrinking with the aspect kept and letting the
    processor squash the rest resamples twice; see docs/optimization-notes.md,
    "Resizing once").
    """

    width: int
    height: int


def size_dict(image_processor: Any) -> dict[str, int]:
    """The image processor's ``size`` as a plain dict (``SizeDict`` objects too)."""
    size = getattr(image_processor, "size", None)
    if size is None:
        return {}
    if not isinstance(size, dict):
        size = {k: getattr(size, k, None) for k in ("height", "width", "shortest_edge", "longest_edge")}
    return {k: int(v) for k, v in size.items() if isinstance(v, (int, float)) and v}


def size_target(image_processor: Any, size: tuple[int, int]) -> ResizeTarget | None:
    """What a standard image processor (CLIP, SigLIP, Florence-2, Idefics3-style) does to ``size``.

    ``{"height", "width"}``: that fixed size; ``{"shortest_edge"}``: shortest side to it,
    the other ``int(edge * long / short)`` (transformers' rounding); ``{"longest_edge"}``:
    longest side to it.  None when the processor does not resize or its size is unknown.
    """
    if not getattr(image_processor, "do_resize", True):
        return None
    spec = size_dict(image_processor)
    width, height = size
    if spec.get("height") and spec.get("width"):
        return ResizeTarget(spec["width"], spec["height"])
    if spec.get("shortest_edge") and not spec.get("longest_edge"):
        edge = spec["shortest_edge"]
        if width <= height:
            return ResizeTarget(edge, int(edge * height / width))
        return ResizeTarget(int(edge * width / height), edge)
    if spec.get("longest_edge") and not spec.get("shortest_edge"):
        edge = spec["longest_edge"]
        if width >= height:
            return ResizeTarget(edge, max(1, int(edge * height / width)))
        return ResizeTarget(max(1, int(edge * width / height)), edge)
    return None


def processor_resample(image_processor: Any) -> Any:
    """The processor's resampling filter as a Pillow filter (BICUBIC when it names none)."""
    from PIL import Image

    value = getattr(image_processor, "resample", None)
    try:
        return Image.Resampling(int(value)) if value is not None else Image.Resampling.BICUBIC
    except (TypeError, ValueError):
        return Image.Resampling.BICUBIC


def shrink_for_processor(image: Any, target: ResizeTarget | None, resample: Any) -> Any:
    """``image`` shrunk towards ``target`` (never enlarged); the image itself when nothing to do."""
    if target is None:
        return image
    width, height = image.size
    new = (target.width, target.height)
    if new[0] > width or new[1] > height or new == (width, height):
        return image  # the processor enlarges it (on some axis) or keeps it: nothing to save
    return image.resize(new, resample, reducing_gap=REDUCING_GAP)
