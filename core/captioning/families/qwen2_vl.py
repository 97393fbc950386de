"""Qwen2-VL / Qwen2.5-VL captioning (``Qwen2VLForConditionalGeneration``, ``Qwen2_5_VLForConditionalGeneration``).

Dynamic resolution: the image processor resizes each photo to a multiple of
``patch_size * merge_size`` within its pixel budget and returns flattened patches plus
``image_grid_thw``; the prompt gets ``grid / merge_size**2`` image tokens per image, so
rows of one batch can differ in length (left padding).  Training builds every row's
prompt from the captioner's own processor call (see :mod:`.chat_vlm`), so the counts
always match the pixels.  Positions are 3-D (M-RoPE) and computed by the model from
``input_ids``, ``image_grid_thw``, ``mm_token_type_ids`` and the attention mask, so none
are passed; with the frozen-vision cache (:mod:`.chat_vlm`) those inputs are all still
there (the grid is kept per example), so the model computes the same positions.

The processor class also wants a video processor, which needs torchvision; where
torchvision is missing the processor is built for images only (captioning uses none).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..input_size import ResizeTarget, size_dict
from .chat_vlm import PromptedVLMFamily

if TYPE_CHECKING:
    from ..load_context import LoadContext

__all__ = ["FAMILY", "Qwen2VLFamily", "images_only_processor"]


def images_only_processor(processor_class: type, image_processor: Any, tokenizer: Any, chat_template: str | None) -> Any:
    """A Qwen-VL processor without its video processor (which cannot be built without torchvision)."""

    class ImagesOnly(processor_class):  # type: ignore[misc, valid-type]
        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument is None and argument_name == "video_processor":
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

        def save_pretrained(self, save_directory: Any, **kwargs: Any) -> list[str]:
            # ProcessorMixin.save_pretrained expects every attribute, the video processor included.
            import json
            from pathlib import Path

            folder = Path(save_directory)
            folder.mkdir(parents=True, exist_ok=True)
            self.image_processor.save_pretrained(folder)
            self.tokenizer.save_pretrained(folder)
            if self.chat_template:
                (folder / "chat_template.jinja").write_text(self.chat_template, encoding="utf-8")
            (folder / "processor_config.json").write_text(
                json.dumps({"processor_class": processor_class.__name__}), encoding="utf-8")
            return [str(folder)]

    ImagesOnly.__name__ = processor_class.__name__  # saved as the real class: loadable where torchvision is
    return ImagesOnly(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                      chat_template=chat_template)


class Qwen2VLFamily(PromptedVLMFamily):
    """Qwen2-VL / Qwen2.5-VL: chat prompt, dynamic-resolution image tokens, M-RoPE."""

    id = "qwen2-vl"
    # Qwen2-VL fine-tuning recipes (LLaMA-Factory / the Qwen2-VL fine-tuning scripts): full 1e-5 to
    # 2e-5, LoRA 1e-4 to 2e-4; QLoRA: the QLoRA paper.
    published_lr = {"full": (1e-5, 2e-5), "lora": (1e-4, 2e-4), "qlora": (1e-4, 2e-4)}
    published_lr_source = "Qwen2-VL"
    model_types = ("qwen2_vl", "qwen2_5_vl")
    examples = ("Qwen/Qwen2-VL-2B-Instruct", "Qwen/Qwen2.5-VL-3B-Instruct")
    positions_from_mask = False  # 3-D M-RoPE positions, computed by the model from the mask
    vision_tower_names = ("visual",)
    projector_names = ()  # the patch merger (projector) is part of ``visual``
    image_feature_inputs = ("image_grid_thw",)
    # Not int8: the vision tower's linears see packed 2-D (patches, features) input, so the per-image
    # int8 Linear makes one kernel call per patch (docs/optimization-notes.md, "int8 per vision-language family").
    cpu_int8_eligible = False

    def processor_input_size(self, processor: Any, size: tuple[int, int]) -> ResizeTarget | None:
        """The processor's own ``smart_resize``: whole ``patch * merge`` units within ``[min_pixels, max_pixels]``."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            smart_resize,
        )

        image_processor = getattr(processor, "image_processor", processor)
        if not getattr(image_processor, "do_resize", True):
            return None
        budget = size_dict(image_processor)
        factor = int(image_processor.patch_size) * int(image_processor.merge_size)
        pixels = {"factor": factor, "min_pixels": budget.get("shortest_edge", 56 * 56),
                  "max_pixels": budget.get("longest_edge", 28 * 28 * 1280)}
        height, width = smart_resize(size[1], size[0], **pixels)
        if smart_resize(height, width, **pixels) != (height, width):
            # Extreme aspect ratios (clamped to one patch row) are not a fixed point of
            # smart_resize: shrinking to the target would change the grid, so don't.
            return None
        return ResizeTarget(width, height)  # the image-token count follows from it

    def load_processor(self, ctx: LoadContext) -> Any:
        try:
            return super().load_processor(ctx)
        except Exception as exc:  # noqa: BLE001 - only the missing-torchvision case is handled
            if "torchvision" not in str(exc).lower() and "torchvision" not in str(exc.__cause__ or "").lower():
                raise
        from transformers import AutoImageProcessor, AutoTokenizer
        from transformers.models.qwen2_5_vl import Qwen2_5_VLProcessor
        from transformers.models.qwen2_vl import Qwen2VLProcessor

        image_processor = ctx.load_pretrained(AutoImageProcessor, "image processor (preprocessor_config.json)")
        tokenizer = ctx.load_pretrained(AutoTokenizer, "tokenizer")
        cls = Qwen2_5_VLProcessor if ctx.config.model_type == "qwen2_5_vl" else Qwen2VLProcessor
        return images_only_processor(cls, image_processor, tokenizer, getattr(tokenizer, "chat_template", None)
                                     or _read_chat_template(ctx))


def _read_chat_template(ctx: LoadContext) -> str | None:
    """``chat_template.jinja`` (or ``chat_template.json``) of the checkpoint, when it is a folder."""
    import json
    from pathlib import Path

    if not ctx.is_local:
        return None
    folder = Path(ctx.ref)
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if (folder / "chat_template.json").is_file():
        return json.loads((folder / "chat_template.json").read_text(encoding="utf-8")).get("chat_template")
    return None


FAMILY = Qwen2VLFamily()
