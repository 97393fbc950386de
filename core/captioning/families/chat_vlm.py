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

**Frozen-vision cache** (:meth:`PromptedVLMFamily.vision_cache_entries`): when the
vision tower *and* the projector/connector between it and the language model are frozen
(LoRA on the language model, the default; not full fine-tuning, whose projector trains),
the trainer keeps, per training example, the model's own ``get_image_features(...)``
output (vision tower + projector, i.e. exactly what is merged into the prompt) and the
example's unpadded prompt tokens.  A cached micro-batch re-pads the prompts as the
processor does (same side, pad id, zeros) and the loss passes the features as
``mm_encoder_outputs`` instead of pixels, so the model's own forward puts them at the
image-token positions (placeholder check + ``masked_scatter``) and derives everything
else from ``input_ids`` as before (Qwen2-VL's M-RoPE positions from ``input_ids``,
``image_grid_thw`` and ``mm_token_type_ids``; PaliGemma's prefix mask from
``token_type_ids``).  Florence-2's forward has no such argument: its loss merges the
features into the encoder's input embeddings the way its forward does
(:meth:`~.florence2.Florence2Family.loss_with_image_features`).  With the vision tower in
eval mode the cached loss equals the uncached one (tests/core/captioning/test_vlm_vision_cache.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ..captioner import HFCaptioner
from ..input_size import (
    ResizeTarget,
    processor_resample,
    shrink_for_processor,
    size_target,
)
from .base import ModelFamily

if TYPE_CHECKING:
    from PIL import Image

    from ..load_context import LoadContext

__all__ = ["DEFAULT_INSTRUCTION", "PromptedVLMCaptioner", "PromptedVLMFamily", "RowPrompts", "VisionCacheRows"]

#: Instruction given to chat-style VLMs when the settings have no prompt.
DEFAULT_INSTRUCTION = "Describe this image in one sentence."


class RowPrompts(list):
    """Per-example prompts kept beside the caption tensors: indexable by a tensor of rows,
    as the trainer slices every entry of the encoded training data for a micro-batch."""

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, (int, slice)):
            return list.__getitem__(self, index) if isinstance(index, int) else RowPrompts(list.__getitem__(self, index))
        return RowPrompts(list.__getitem__(self, int(i)) for i in index.tolist())


class VisionCacheRows(RowPrompts):
    """The frozen-vision cache of the training examples, one entry per example (indexable by a
    tensor of rows, like :class:`RowPrompts`): ``{"tokens": {name: 1-D tensor without padding},
    "side": {name: (1, ...) tensor}, "features": (image tokens, hidden) tensor}``."""


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
    supports_vision_cache = True
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
    #: Modules on ``model.model`` between the vision tower and the language model (frozen for the cache).
    projector_names: ClassVar[tuple[str, ...]] = ("multi_modal_projector",)
    #: Processor outputs besides ``pixel_*`` that ``get_image_features`` takes (Qwen2-VL: the grids).
    image_feature_inputs: ClassVar[tuple[str, ...]] = ()
    #: The forward wants the cached features as one ``(images, tokens, hidden)`` tensor, not a list.
    stacked_image_features: ClassVar[bool] = False

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

    def image_feature_modules(self, model: Any) -> list[Any]:
        """The vision tower and the projector: what ``get_image_features`` runs (and the cache replaces)."""
        inner = getattr(model, "model", model)
        modules = [self.vision_tower(model), *(getattr(inner, name, None) for name in self.projector_names)]
        return [m for m in modules if m is not None]

    def vision_cache_entries(self, captioner: HFCaptioner, model: Any, vision: Any, images: list[Any],
                             text: dict[str, Any]) -> VisionCacheRows | None:
        """Per example: its prompt tokens (unpadded), its per-image side inputs (Qwen2-VL's grid) and
        the image features ``model.get_image_features`` computes (vision tower + projector); None
        when a module of that path trains (e.g. the projector under full fine-tuning)."""
        import torch

        modules = self.image_feature_modules(model)
        if not modules or any(p.requires_grad for m in modules for p in m.parameters()):
            return None  # a trainable projector changes the features every step
        for module in modules:
            module.eval()
        inputs = self.prompt_inputs(captioner, images, text.get("prompts"))
        inputs.pop("labels", None)
        mask = inputs["attention_mask"].bool()
        device = captioner.device
        feature_kwargs = {k: v.to(device) for k, v in inputs.items()
                          if k.startswith("pixel_") or k in self.image_feature_inputs}
        with torch.no_grad():
            features = model.get_image_features(**feature_kwargs, return_dict=True).pooler_output
        features = [f.float().cpu() for f in features]  # one entry per example (one image each)
        if len(features) != len(images):
            return None  # not one feature block per image: nothing to key per example
        tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor) and not k.startswith("pixel_")}
        token_names = [k for k, v in tensors.items() if v.shape == mask.shape]
        side_names = [k for k in tensors if k not in token_names]  # per image (Qwen2-VL's image_grid_thw)
        if any(inputs[k].shape[0] != len(images) for k in side_names):
            return None
        return VisionCacheRows(
            {"tokens": {k: inputs[k][i][mask[i]] for k in token_names},
             "side": {k: inputs[k][i : i + 1] for k in side_names},
             "features": features[i]}
            for i in range(len(images)))

    def cached_prompt_inputs(self, captioner: HFCaptioner, entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The prompt inputs of cached examples as the processor pads them (tokenizer's side, pad id,
        zeros elsewhere), their side inputs, and their features as ``"image_features"``."""
        import torch

        width = max(len(e["tokens"]["input_ids"]) for e in entries)
        left = getattr(captioner.tokenizer, "padding_side", "right") == "left"
        pad_id = self.pad_token(captioner, 0)
        inputs: dict[str, Any] = {}
        for name in entries[0]["tokens"]:
            rows = []
            for e in entries:
                row = e["tokens"][name]
                fill = torch.full((width - len(row),), pad_id if name == "input_ids" else 0, dtype=row.dtype)
                rows.append(torch.cat([fill, row] if left else [row, fill]))
            inputs[name] = torch.stack(rows)
        for name in entries[0]["side"]:
            inputs[name] = torch.cat([e["side"][name] for e in entries])
        inputs["image_features"] = [e["features"] for e in entries]
        return inputs

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
        """Prompt inputs exactly as for generation, then ``caption EOS``; labels only on the caption.

        With ``image_embeds`` (the cached entries of these examples) the prompt inputs are the
        cached ones and the features travel as ``"image_features"`` (see :meth:`loss`)."""
        import torch

        if image_embeds is not None:
            inputs = self.cached_prompt_inputs(captioner, image_embeds)
        else:
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

    def loss(self, model: Any, batch: dict[str, Any]) -> Any:
        """The model's own loss; cached ``image_features`` go in through :meth:`loss_with_image_features`."""
        if "image_features" not in batch:
            return model(**batch).loss
        batch = dict(batch)
        features = [f.to(model.device) for f in batch.pop("image_features")]
        return self.loss_with_image_features(model, batch, features)

    def loss_with_image_features(self, model: Any, batch: dict[str, Any], features: list[Any]) -> Any:
        """The loss with precomputed image features: the forward's ``mm_encoder_outputs`` (transformers
        5.x), which it merges at the image tokens exactly as features it computed itself."""
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        pooled = torch.stack(features) if self.stacked_image_features else features
        return model(**batch, mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=pooled)}).loss
