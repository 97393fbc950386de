"""What a model family is: :class:`ModelFamily`, the one place that knows a family.

A family (BLIP, BLIP-2, GIT, VisionEncoderDecoder, the generic
``AutoModelForImageTextToText`` one, ...) declares, in one file under
``core/captioning/families/``:

* which ``config.model_type`` values it loads, and **how** (:meth:`ModelFamily.load`,
  returning its :class:`~core.captioning.captioner.HFCaptioner` subclass, which owns
  generation: how images + prompt become model inputs, where captions end);
* which CPU fast paths ``optimize="auto"`` may use on it (:attr:`cpu_int8_eligible`,
  :attr:`sdpa_vision_patch`);
* how it is trained: whether it can be (:attr:`trainable`), its LoRA targets
  (:meth:`lora_targets`), its vision tower and whether that tower's output can be
  cached while it is frozen (:meth:`vision_tower`, :attr:`supports_vision_cache`,
  :meth:`vision_embeddings`, :meth:`vision_cache_entries`), how captions become a training batch that mirrors
  generation (:meth:`encode_training_batch`) and the loss (:meth:`loss`).

The trainer and the loader only call these public methods; they never test a
family's id.  Family ids are spelt one way (:attr:`ModelFamily.id`); legacy
spellings found in stored data are mapped by
:func:`core.captioning.families.canonical_family_id`.

Nothing here imports torch or transformers at module level.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..captioner import HFCaptioner
    from ..load_context import LoadContext
    from ..presets import Preset

__all__ = ["ModelFamily", "TrainingNotSupportedError", "pad_rows"]


class TrainingNotSupportedError(Exception):
    """The family cannot build training batches (the message names the family)."""


def pad_rows(rows: list[list[int]], value: int) -> Any:
    """``rows`` right-padded with ``value`` into one ``(len(rows), longest)`` long tensor."""
    import torch

    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


class ModelFamily:
    """One model family: its loader, its CPU fast paths and how it is trained.

    Subclasses set the class attributes and implement :meth:`load`; trainable
    families also implement :meth:`encode_training_batch` (and :meth:`loss` when
    the model's own ``forward(...).loss`` is not enough).  Instances are
    stateless singletons held by the registry in :mod:`core.captioning.families`.
    """

    #: The one spelling of this family's id: captioner identity, ``ModelVersion.family``.
    id: ClassVar[str]
    #: ``config.model_type`` values this family loads (empty for the generic fallback).
    model_types: ClassVar[tuple[str, ...]] = ()
    #: Example checkpoints, for messages.
    examples: ClassVar[tuple[str, ...]] = ()

    # -- inference fast paths ----------------------------------------------------------

    #: ``optimize="auto"`` int8-quantizes it on the CPU (small, validated models only).
    cpu_int8_eligible: ClassVar[bool] = False
    #: Its vision attention is BLIP's hand-written one, switched to SDPA by ``optimize``.
    sdpa_vision_patch: ClassVar[bool] = False

    def model_input_side(self, processor: Any) -> int | None:
        """The larger side of the model's image input, for the JPEG draft (None: read the processor's size)."""
        return None

    # -- prompts and presets (core/captioning/presets.py) ------------------------------

    #: How the family reads a prompt: ``"prefix"`` (the caption continues it: conditional
    #: captioning) or ``"instruction"`` (the model is asked to do something).
    prompt_style: ClassVar[str] = "prefix"
    #: Preset id -> this family's prompt for it (None: an unconditional caption).  A prefix
    #: family supports exactly these; an instruction family falls back to the preset's
    #: instruction for the others.
    preset_prompts: ClassVar[Mapping[str, str | None]] = {"short": None, "alt_text": None, "t2i_prompt": None}

    def preset_prompt(self, preset: Preset, *, model_type: str | None = None) -> str | None:
        """The prompt that makes this family write *preset* (the rendering hook for presets).

        Raises:
            UnsupportedPresetError: the family cannot follow it (the message lists what it can).
        """
        from ..presets import UnsupportedPresetError

        if preset.id in self.preset_prompts:
            return self.preset_prompts[preset.id]
        if self.prompt_style == "instruction":
            return preset.instruction
        raise UnsupportedPresetError(
            f"the {self.id} family cannot write the '{preset.id}' preset ({preset.label}): its prompt is a text "
            f"prefix the caption continues, not an instruction; presets it supports: "
            f"{', '.join(self.preset_prompts)} (or give your own prefix with --prompt)")

    # -- training ------------------------------------------------------------------------

    #: LoRA settings chosen by measurement (README "LoRA defaults"), used when a run does
    #: not set them: ``r``, ``alpha``, ``dropout``, ``lr`` and ``targets`` (None: the
    #: family's :meth:`lora_targets`).
    lora_defaults: ClassVar[Mapping[str, Any]] = {"r": 8, "alpha": 32, "dropout": 0.1, "lr": 1e-4, "targets": None}
    #: Published fine-tuning learning rates of real checkpoints, per method (``full``, ``lora``,
    #: ``qlora``: ``(low, high)``), and whose recipe they are: the learning-rate range test
    #: (core/training/lr_range.py) says when its choice falls outside them.  Empty: none known.
    published_lr: ClassVar[Mapping[str, tuple[float, float]]] = {}
    published_lr_source: ClassVar[str] = ""

    #: :func:`core.training.train` can train it.
    trainable: ClassVar[bool] = False
    #: A frozen vision tower's output can be computed once and fed back via ``image_embeds``.
    supports_vision_cache: ClassVar[bool] = False
    #: LoRA ``target_modules`` of the text side / of the vision tower (empty: "all-linear").
    lora_text_targets: ClassVar[tuple[str, ...]] = ()
    lora_vision_targets: ClassVar[tuple[str, ...]] = ()

    def __repr__(self) -> str:
        return f"<model family {self.id}>"

    # -- loading / generation --------------------------------------------------------------

    def load(self, ctx: LoadContext) -> HFCaptioner:
        """Build model + processor through ``ctx`` and return the ready captioner."""
        raise NotImplementedError

    # -- prompts -----------------------------------------------------------------------

    def default_prompt(self, captioner: HFCaptioner) -> str | None:
        """The prompt text used when the settings have none (None: caption unconditionally)."""
        return None

    def build_prompt(self, captioner: HFCaptioner, prompt_text: str | None) -> str:
        """What the processor is given for ``prompt_text``: the text itself, or a rendered chat turn."""
        return prompt_text or ""

    # -- training ------------------------------------------------------------------------

    def lora_targets(self, model_config: Any | None = None, *, train_vision: bool = False) -> list[str] | str:
        """Default LoRA ``target_modules``; ``"all-linear"`` when the family names none.

        ``model_config`` (the transformers config, when known) lets a family pick
        per checkpoint (BLIP-2's language model is OPT or Flan-T5).
        """
        if not self.lora_text_targets:
            return "all-linear"
        return [*self.lora_text_targets, *(self.lora_vision_targets if train_vision else ())]

    def vision_tower(self, model: Any) -> Any | None:
        """The vision encoder of a plain transformers model of this family, or None."""
        return getattr(model, "vision_model", None) or getattr(model, "vision_tower", None)

    def vision_embeddings(self, vision: Any, pixel_values: Any) -> Any:
        """What the model's forward takes from its (frozen) vision tower: the last hidden state."""
        return vision(pixel_values=pixel_values).last_hidden_state

    def vision_cache_entries(self, captioner: HFCaptioner, model: Any, vision: Any, images: list[Any],
                             text: dict[str, Any]) -> Any | None:
        """What the trainer caches for ``images`` (``text``: their rows of :meth:`encode_training_batch`),
        called under ``no_grad`` with the frozen tower in eval mode; None: no cache for this model.

        Default: :meth:`vision_embeddings` of their pixels (a tensor, row i = image i).  A family
        may return a list indexable by a tensor of rows (one entry per example) instead; the
        trainer hands the entries of a micro-batch to :meth:`training_batch` as ``image_embeds``.
        """
        pixels = captioner.pixel_values(images).to(captioner.device)
        return self.vision_embeddings(vision, pixels).float().cpu()

    def encode_training_batch(self, captioner: HFCaptioner, captions: list[str], max_length: int) -> dict[str, Any]:
        """Token tensors for ``captions`` (CPU, row i = caption i), keyed like :meth:`loss`'s batch.

        The batch mirrors how the captioner generates: same prefix, same end token.
        """
        raise TrainingNotSupportedError(f"no training batches for the {self.id} family")

    def training_batch(self, captioner: HFCaptioner, text: dict[str, Any], images: list[Any] | None,
                       image_embeds: Any | None) -> dict[str, Any]:
        """One training micro-batch (CPU tensors) for :meth:`loss`.

        ``text`` holds the rows of :meth:`encode_training_batch` for these examples;
        ``images`` their decoded photos, or None when ``image_embeds`` (the cached
        vision-tower output) replaces them.  Families whose prompt depends on the image
        (image token counts, e.g. Qwen2-VL's dynamic resolution) build the prompt here.
        """
        if image_embeds is not None:
            return {**text, "image_embeds": image_embeds}
        return {**text, "pixel_values": captioner.pixel_values(images or [])}

    def loss(self, model: Any, batch: dict[str, Any]) -> Any:
        """Mean caption loss of ``batch`` (token tensors + ``pixel_values`` or ``image_embeds``)."""
        return model(**batch).loss

    # -- shared helpers for subclasses -------------------------------------------------

    @staticmethod
    def caption_end_token(captioner: HFCaptioner) -> int:
        """The token that ends a caption: the first id the captioner stops at."""
        ids = captioner.eos_token_ids()
        if ids:
            return ids[0]
        tok = captioner.tokenizer
        for value in (getattr(tok, "eos_token_id", None), getattr(tok, "sep_token_id", None)):
            if value is not None:
                return int(value)
        raise TrainingNotSupportedError("the model has no end-of-sequence token (generation_config.eos_token_id); "
                                        "captions could not be taught to end")

    @staticmethod
    def caption_token_ids(captioner: HFCaptioner, captions: list[str]) -> list[list[int]]:
        """Caption tokens without special tokens (the tokenizer itself is never modified)."""
        return [[int(i) for i in ids] for ids in captioner.tokenizer(captions, add_special_tokens=False)["input_ids"]]

    @staticmethod
    def pad_token(captioner: HFCaptioner, fallback: int) -> int:
        """The tokenizer's pad id, or ``fallback`` (GPT-2 has none; padding is masked anyway)."""
        pad = captioner.tokenizer.pad_token_id
        return int(pad) if pad is not None else fallback
