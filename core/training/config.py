"""The validated settings of one training run (:class:`TrainingConfig`).

Plain, JSON-serialisable values only: the config is stored with the model version
(``ModelVersion.config``) and in the run folder, where a re-run compares it to decide
whether it may resume.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from core.kinds import CAPTION, check_kind_name
from core.splits import DEFAULT_SEED, DEFAULT_VAL_RATIO

__all__ = ["METHODS", "MIN_TRAIN", "MIN_VALIDATION", "TrainingConfig", "default_target_modules"]

METHODS = ("lora", "full", "qlora")
#: Fewest verified captions a run accepts in each split.
MIN_TRAIN = 8
MIN_VALIDATION = 2

def default_target_modules(model_type: str, *, train_vision: bool = False,
                           model_config: Any | None = None) -> list[str] | str:
    """LoRA ``target_modules`` for a ``config.model_type``; ``"all-linear"`` (peft skips the LM head) otherwise.

    The targets are declared by the model family (:meth:`ModelFamily.lora_targets
    <core.captioning.families.base.ModelFamily.lora_targets>`); *model_config* (the
    transformers config) lets BLIP-2 pick its language model's names (OPT ``q_proj``/
    ``v_proj``, Flan-T5 ``q``/``v``).
    """
    from core.captioning.families import family_for_model_type

    family = family_for_model_type(model_type)
    if family is None:
        return "all-linear"
    return family.lora_targets(model_config, train_vision=train_vision)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_float(name: str, value: Any, low: float, high: float | None = None, *, low_open: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and not math.isnan(value)
    if ok:
        ok = value > low if low_open else value >= low
        if high is not None:
            ok = ok and value < high
    if not ok:
        bound = f"{'>' if low_open else '>='} {low}" + (f" and < {high}" if high is not None else "")
        raise ValueError(f"{name} must be a number {bound}, got {value!r}")


@dataclass(frozen=True)
class TrainingConfig:
    """Hyperparameters of a run.  Invalid values raise ``ValueError`` naming the field.

    Attributes:
        method: ``lora`` (adapter only), ``full`` (every decoder weight) or ``qlora``
            (LoRA on a 4-bit NF4 base via bitsandbytes: CUDA, or its
            CPU kernels, which save memory but are slower than ``lora``).
        lora_r, lora_alpha, lora_dropout: LoRA rank, scale and dropout; None = the
            family's measured defaults (``ModelFamily.lora_defaults``, see the README's
            "LoRA defaults"), filled in by :meth:`with_family_defaults` when the run starts.
        target_modules: LoRA target module names; None = per family
            (``lora_defaults["targets"]``, else :func:`default_target_modules`).
        preset, prompt_template: the caption preset or prompt template
            (core/captioning/presets.py) the model is trained to answer: the rendered
            prompt is the prefix of every training caption and of evaluation, and the
            version records it so captioning with it reuses it.
        train_vision: LoRA also on the vision encoder (BLIP / BLIP-2 ``qkv``, GIT and
            ViT ``q_proj``/``v_proj``) / full fine-tuning also unfreezes it.  Off: the vision encoder is frozen and its outputs are
            computed once per image and reused across epochs.
        cache_vision: Reuse vision embeddings when the encoder is frozen (``auto`` = on
            unless the cache would exceed ``cache_limit_mb``).
        lr, weight_decay, warmup_ratio, max_grad_norm: optimiser (AdamW) and schedule
            (lr None: chosen by the learning-rate range test on the run's own data,
            core/training/lr_range.py) (linear warm-up, cosine decay to 0, gradient clipping).
        epochs, batch_size, grad_accum: passes over the data, images per forward pass,
            forward passes per optimiser step.
        patience: stop after this many evaluations without a better score (0 = never).
        val_ratio, seed: the split, via :func:`core.splits.assign_split`.
        include_imports: also train on imported (not verified) captions.
        kind: the caption kind (:mod:`core.kinds`) learnt from its verified values; the
            version records it and writes that kind when it captions.
        max_length: caption tokens kept (longer captions are truncated).
        gradient_checkpointing: trade compute for memory (enabled after ``get_peft_model``).
        mixed_precision: ``auto`` (bf16 where supported, else fp16, on CUDA only), ``no``,
            ``bf16`` or ``fp16``.
        device: ``auto``, ``cpu``, ``cuda`` (``cuda:N``) or ``mps``.
        max_new_tokens: caption length cap used when evaluating.
    """

    method: str = "lora"
    lora_r: int | None = None
    lora_alpha: int | None = None
    lora_dropout: float | None = None
    target_modules: list[str] | str | None = None
    preset: str | None = None
    prompt_template: str | None = None
    train_vision: bool = False
    cache_vision: str = "auto"
    cache_limit_mb: int = 4096
    lr: float | None = None
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    epochs: int = 5
    batch_size: int = 8
    grad_accum: int = 1
    patience: int = 2
    val_ratio: float = DEFAULT_VAL_RATIO
    seed: int = DEFAULT_SEED
    include_imports: bool = False
    max_length: int = 40
    gradient_checkpointing: bool = False
    mixed_precision: str = "auto"
    device: str = "auto"
    max_new_tokens: int = 30
    kind: str = CAPTION

    def __post_init__(self) -> None:
        check_kind_name(self.kind)  # a KindError is a ValueError
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.lora_r is not None:
            _check_int("lora_r", self.lora_r, 1)
        if self.lora_alpha is not None:
            _check_int("lora_alpha", self.lora_alpha, 1)
        if self.lora_dropout is not None:
            _check_float("lora_dropout", self.lora_dropout, 0.0, 1.0)
        if self.preset is not None or self.prompt_template is not None:
            from core.captioning.presets import PRESETS, template_variables

            if self.preset is not None and self.prompt_template is not None:
                raise ValueError("preset and prompt_template: give one, not both")
            if self.preset is not None and self.preset not in PRESETS:
                raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
            if self.prompt_template is not None and "current_caption" in template_variables(self.prompt_template):
                # The current caption of a training image is the answer itself.
                raise ValueError("prompt_template cannot use {current_caption} for training")
        tm = self.target_modules
        if tm is not None and not (
            isinstance(tm, str) and tm
            or isinstance(tm, (list, tuple)) and tm and all(isinstance(m, str) and m for m in tm)
        ):
            raise ValueError(f"target_modules must be a non-empty list of module names or 'all-linear', got {tm!r}")
        if isinstance(tm, tuple):
            object.__setattr__(self, "target_modules", list(tm))
        for name in ("train_vision", "include_imports", "gradient_checkpointing"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")  # noqa: TRY004 - one exception type for bad settings
        if self.cache_vision not in ("auto", "yes", "no"):
            raise ValueError(f"cache_vision must be auto, yes or no, got {self.cache_vision!r}")
        _check_int("cache_limit_mb", self.cache_limit_mb, 0)
        if self.lr is not None:
            _check_float("lr", self.lr, 0.0, 1.0, low_open=True)
        _check_float("weight_decay", self.weight_decay, 0.0)
        _check_float("warmup_ratio", self.warmup_ratio, 0.0, 1.0)
        _check_float("max_grad_norm", self.max_grad_norm, 0.0, low_open=True)
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("grad_accum", self.grad_accum, 1)
        _check_int("patience", self.patience, 0)
        _check_float("val_ratio", self.val_ratio, 0.0, 1.0, low_open=True)
        _check_int("seed", self.seed, 0)
        _check_int("max_length", self.max_length, 4)
        _check_int("max_new_tokens", self.max_new_tokens, 1)
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.device not in ("auto", "cpu", "cuda", "mps") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu, cuda or mps, got {self.device!r}")

    @property
    def uses_lora(self) -> bool:
        return self.method in ("lora", "qlora")

    def with_family_defaults(self, family: Any) -> TrainingConfig:
        """This config with every unset LoRA setting taken from *family*'s ``lora_defaults``
        (the measured defaults); an unset lr stays unset: the range test chooses it."""
        d = family.lora_defaults
        return replace(self, lora_r=self.lora_r if self.lora_r is not None else d["r"],
                       lora_alpha=self.lora_alpha if self.lora_alpha is not None else d["alpha"],
                       lora_dropout=self.lora_dropout if self.lora_dropout is not None else d["dropout"],
                       target_modules=self.target_modules if self.target_modules is not None else d.get("targets"))

    def fallback_lr(self, family: Any) -> float:
        """The rate used when the range test finds no falling loss: the family's LoRA default, 1e-4 for full."""
        return float(family.lora_defaults["lr"]) if self.uses_lora else 1e-4

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON values; ``kind`` only when not ``caption``, so a caption run's
        record (its version's config, the key an unfinished run resumes by) is as before kinds."""
        data = asdict(self)
        if data["kind"] == CAPTION:
            del data["kind"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**data)
