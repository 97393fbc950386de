"""What prompt-driven vision-language families share: :class:`PromptedVLMFamily` and its captioner.

The families built on it (``llava``, ``qwen2_vl``, ``idefics3``, ``paligemma``,
``florence2``; one small file each) caption when *asked* to: the processor gets the
images and one prompt text (:meth:`PromptedVLMFamily.build_prompt`: a chat turn
rendered with the processor's chat template and ``add_generation_prompt``, a task
token, or the prompt as is) and expands the image placeholders itself, so the number
of image tokens per image is whatever the processor says (fixed for LLaVA, SigLIP
and Idefics3 without splitting; per image size for Qwen2-VL's dynamic resolution).

Training mirrors generation exactly (:meth:`PromptedVLMFamily.training_batch`): the
prompt part of every row is the captioner's own preprocessed input for that image
(same processor call, same left padding), followed by ``caption EOS`` and right
padding; labels are -100 on the prompt and the padding, so the loss covers only the
caption tokens.  Per-token side inputs the processor returns (``token_type_ids``,
``mm_token_type_ids``) are extended over the caption with the value each family
declares.  Where left padding shifted a row and the model takes 1-D positions, the
positions are computed from the attention mask as ``generate`` does.

Encoder-decoder models (Florence-2) override :meth:`training_batch`: the prompt is
the encoder input and ``caption EOS`` the decoder labels.

The frozen-vision embedding cache is not offered for these families: their forwards
take pixels (and per-image grids) and compute the image features inside, and feeding
features back would bypass the projector the way each architecture wires it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ..base import HFCaptioner
from ..input_size import (
    ResizeTarget,
    processor_resample,
    shrink_for_processor,
    size_target,
)
from .base import ModelFamily

if TYPE_CHECKING:
    from PIL import Image

    from ..registry import LoadContext

__all__ = ["DEFAULT_INSTRUCTION", "PromptedVLMCaptioner", "PromptedVLMFamily", "RowPrompts"]

#: Instruction given to chat-style VLMs when the settings have no prompt.
DEFAULT_INSTRUCTION = "Describe this image in one sentence."


class RowPrompts(list):
    """Per-example prompts kept beside the caption tensors: indexable by a tensor of rows,
    as the trainer slices every entry of the encoded training data for a micro-batch."""

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, (int, slice)):
            return list.__getitem__(self, index) if isinstance(index, int) else RowPrompts(list.__getitem__(self, index))
        return RowPrompts(list.__getitem__(self, int(i)) for i in index.tolist())


class PromptedVLMCaptioner(HFCaptioner):
    """Captioner for a :class:`PromptedVLMFamily`: images + one prompt through the processor."""

    family: PromptedVLMFamily

    def _default_prompt(self) -> str | None:
        return self.family.default_prompt(self)

    def _encode(self, images: Sequence[Image.Image], prompt: str | None) -> dict[str, Any]:
        return self.encode_prompts(images, [prompt] * len(images))

    def encode_prompts(self, images: Sequence[Image.Image], prompts: Sequence[str | None]) -> dict[str, Any]:
        """The model inputs for ``images[i]`` asked ``prompts[i]`` (None: the family's default
        prompt), exactly as captioning encodes them (one processor call, left padding)."""
        default = self._default_prompt()
        texts = [self.family.build_prompt(self, p if p is not None else default) for p in prompts]
        # Shrunk to what the processor would resize them to anyway (a 24 MP photo is not
        # converted to numpy at full size); the processor's output is (nearly) the same.
        images = [self.family.fit_for_processor(self.processor, image) for image in images]
        # The processor tokenizes (and expands image placeholders) in one
        # call, so the whole call holds the tokenizer lock.
        with self._tokenizer_lock:
            encoded = self.processor(images=self.family.processor_images(images), text=texts,
                                     return_tensors="pt", padding=True)
        return dict(encoded)


def load_image_text_to_text(ctx: LoadContext, processor: Any, captioner_cls: type[HFCaptioner]) -> Any:
    """An ``AutoModelForImageTextToText`` model with *processor*, ready as *captioner_cls*.

    Refuses a processor without an image processor or a tokenizer; decoder-only models pad
    on the left, so every row of a batch ends where generation starts.
    """
    from transformers import AutoModelForImageTextToText

    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None or not hasattr(processor, "image_processor"):
        raise ctx.fail(ValueError("its processor has no image processor or no tokenizer"), "processor")
    model = ctx.load_model(AutoModelForImageTextToText)
    if not model.config.is_encoder_decoder:
        # Left padding keeps the generation start aligned across the batch.
        tokenizer.padding_side = "left"
    return ctx.finish(captioner_cls, model, processor, tokenizer)


class PromptedVLMFamily(ModelFamily):
    """A vision-language model loaded with ``AutoModelForImageTextToText`` and prompted.

    Subclasses declare ``id``, ``model_types``, :attr:`language_model_path` (for LoRA
    targets) and, where they differ, the prompt, the processor's image argument and how
    side inputs continue over the caption.
    """

    trainable = True
    supports_vision_cache = False
    # Presets are sent as their instructions (Florence-2 overrides: task tokens).
    prompt_style = "instruction"
    preset_prompts: ClassVar[dict[str, str | None]] = {}
    # README "LoRA defaults" (benchmarks/lora_defaults.py --family ...): restyling tiny VLMs, r 16 on the
    # language model's attention + feed-forward learned where attention alone did not (Idefics3 0.0 vs
    # 1.0, Qwen2-VL 0.77 vs 1.0).  The lr is NOT the tiny models' optimum (1e-2 at language-model width
    # 32-256, 3e-3 at 512, 1e-3-3e-3 at 1024): even scaled as 1/width from there it would give real 0.5-8B checkpoints
    # 4e-4 to 3e-3, above their published LoRA rates; 2e-4 is LLaVA-1.5's published LoRA rate
    # (r 128 / alpha 256: the same alpha/r of 2) and QLoRA's for 7B-13B.
    lora_defaults: ClassVar[Mapping[str, Any]] = {"r": 16, "alpha": 32, "dropout": 0.05, "lr": 2e-4, "targets": None}
    #: Linear layers of the language model that LoRA adapts (Llama/Qwen/Gemma names).
    lora_text_targets: ClassVar[tuple[str, ...]] = ("q_proj", "k_proj", "v_proj", "o_proj",
                                                    "gate_proj", "up_proj", "down_proj")
    #: Module path (regex) of the language model inside the transformers model.
    language_model_path: ClassVar[str] = r"model\.language_model"
    #: Attribute names of the vision encoder on ``model.model``, first found wins.
    vision_tower_names: ClassVar[tuple[str, ...]] = ("vision_tower", "visual", "vision_model")
    #: Value of each per-token side input over the caption tokens (PaliGemma: suffix = 1).
    caption_token_types: ClassVar[dict[str, int]] = {"token_type_ids": 0, "mm_token_type_ids": 0}
    #: The language model takes 1-D ``position_ids`` that ``generate`` derives from the mask.
    positions_from_mask: ClassVar[bool] = True

    # -- loading ----------------------------------------------------------------------------

    def load_processor(self, ctx: LoadContext) -> Any:
        from transformers import AutoProcessor

        return ctx.load_pretrained(AutoProcessor, "processor (processor_config.json / tokenizer)")

    def load(self, ctx: LoadContext) -> PromptedVLMCaptioner:
        return load_image_text_to_text(ctx, self.load_processor(ctx), PromptedVLMCaptioner)

    # -- prompts ------------------------------------------------------------------------------

    def default_prompt(self, captioner: HFCaptioner) -> str | None:
        return DEFAULT_INSTRUCTION

    def build_prompt(self, captioner: HFCaptioner, prompt_text: str | None) -> str:
        """One user turn (image + instruction) rendered with the chat template, or the text as is."""
        processor = captioner.processor
        if not getattr(processor, "chat_template", None):
            return prompt_text or ""
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt_text or ""}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    # -- input size (core/captioning/input_size.py) -------------------------------------------

    def processor_input_size(self, processor: Any, size: tuple[int, int]) -> ResizeTarget | None:
        """What the image processor resizes an image of ``size`` (width, height) to (None: unknown)."""
        return size_target(getattr(processor, "image_processor", processor), size)

    def model_input_side(self, processor: Any) -> int | None:
        """The larger side the processor brings a large square photo to (the JPEG draft size)."""
        target = self.processor_input_size(processor, (8192, 8192))
        return max(target.width, target.height) if target else None

    def fit_for_processor(self, processor: Any, image: Any) -> Any:
        """``image`` shrunk (never enlarged) to :meth:`processor_input_size` before the processor."""
        target = self.processor_input_size(processor, image.size)
        return shrink_for_processor(image, target, processor_resample(getattr(processor, "image_processor", None)))

    def processor_images(self, images: Sequence[Any]) -> list[Any]:
        """The ``images=`` argument of the processor for one image per prompt."""
        return list(images)

    # -- training -------------------------------------------------------------------------

    def lora_targets(self, model_config: Any | None = None, *, train_vision: bool = False) -> list[str] | str:
        """The language model's linear layers (a regex: the vision tower uses the same names)."""
        if train_vision:
            return "all-linear"  # the trainer expands it to every linear layer but the LM head
        return rf".*{self.language_model_path}\..*\.({'|'.join(self.lora_text_targets)})"

    def vision_tower(self, model: Any) -> Any | None:
        inner = getattr(model, "model", model)
        for name in self.vision_tower_names:
            tower = getattr(inner, name, None)
            if tower is not None:
                return tower
        return None

    def encode_training_batch(self, captioner: HFCaptioner, captions: list[str], max_length: int,
                              prompts: list[str | None] | None = None) -> dict[str, Any]:
        """``caption EOS`` per row (at most ``max_length`` tokens), padded with -100; with
        *prompts* (the run's preset or template rendered per image, as captioning renders it)
        each row also keeps its prompt (``"prompts"``) for :meth:`training_batch`."""
        from .base import pad_rows

        eos = self.caption_end_token(captioner)
        rows = [[*ids[: max(1, max_length - 1)], eos] for ids in self.caption_token_ids(captioner, captions)]
        text: dict[str, Any] = {"caption_ids": pad_rows(rows, -100)}
        if prompts is not None:
            text["prompts"] = RowPrompts(prompts)
        return text

    def prompt_inputs(self, captioner: HFCaptioner, images: list[Any],
                      prompts: Sequence[str | None] | None = None) -> dict[str, Any]:
        """The captioner's own encoded inputs for ``images`` with *prompts* (default: the default prompt)."""
        return captioner.encode_prompts(images, list(prompts) if prompts is not None else [None] * len(images))

    def training_batch(self, captioner: HFCaptioner, text: dict[str, Any], images: list[Any] | None,
                       image_embeds: Any | None) -> dict[str, Any]:
        """Prompt inputs exactly as for generation, then ``caption EOS``; labels only on the caption."""
        import torch

        inputs = self.prompt_inputs(captioner, images or [], text.get("prompts"))
        caption = text["caption_ids"]
        on_caption = caption != -100
        inputs.pop("labels", None)  # PaliGemma's processor returns all -100 prompt labels
        prompt_ids, prompt_mask = inputs.pop("input_ids"), inputs.pop("attention_mask")
        batch: dict[str, Any] = {
            "input_ids": torch.cat([prompt_ids, caption.masked_fill(~on_caption, self.pad_token(captioner, 0))], 1),
            "attention_mask": torch.cat([prompt_mask, on_caption.to(prompt_mask.dtype)], 1),
            "labels": torch.cat([torch.full_like(prompt_ids, -100), caption], 1),
        }
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor) and value.shape == prompt_ids.shape:
                fill = self.caption_token_types.get(key, 0)
                value = torch.cat([value, torch.full(caption.shape, fill, dtype=value.dtype)], 1)
            batch[key] = value
        if self.positions_from_mask and bool((prompt_mask == 0).any()):
            # Left-padded rows: positions as generate() derives them from the attention mask.
            positions = batch["attention_mask"].long().cumsum(-1) - 1
            batch["position_ids"] = positions.masked_fill(batch["attention_mask"] == 0, 0)
        return batch
