"""The model a run trains: the base captioner loaded (fp32, or 4-bit for QLoRA), its
family checked, and LoRA / QLoRA / full fine-tuning set up (:class:`_PreparedModel`)."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.captioning.families import ModelFamily, trainable_family_ids

from .config import TrainingConfig
from .result import TrainingError

if TYPE_CHECKING:

    pass

log = logging.getLogger(__name__)

#: Ids of the families :func:`train` can train (declared by each family: ``trainable``).
TRAINABLE_FAMILIES: tuple[str, ...] = tuple(trainable_family_ids())


# --------------------------------------------------------------------------- model


def _load_base_captioner(base: str, config: TrainingConfig) -> Any:
    """The base model in its family's captioner: fp32 and unoptimised, or 4-bit for QLoRA."""
    if config.method == "qlora":
        return _load_qlora_captioner(base, config)
    from core.captioning import load_captioner

    return load_captioner(base, device=config.device, optimize="none")


def _trainable_family(captioner: Any) -> ModelFamily:
    family: ModelFamily = captioner.family
    if family.trainable:
        return family
    model_type = getattr(captioner, "model_type", None)
    what = f"{family.id} models" + (f" ({model_type})" if model_type and model_type != family.id else "")
    raise TrainingError(
        f"training {what} is not supported yet; trainable model families: {', '.join(TRAINABLE_FAMILIES)} "
        "(e.g. Salesforce/blip-image-captioning-*, Salesforce/blip2-*, microsoft/git-*, "
        "nlpconnect/vit-gpt2-image-captioning, Florence-2, LLaVA/JoyCaption, Qwen2-VL, SmolVLM, PaliGemma)")


def _qlora_device(config: TrainingConfig) -> str:
    """Where a QLoRA run can go: ``cuda`` when present, else ``cpu`` if bitsandbytes runs 4-bit there."""
    import torch

    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise TrainingError("QLoRA needs the bitsandbytes package: pip install bitsandbytes "
                            "(or use --method lora)") from exc
    wanted = str(config.device)
    if wanted.startswith("cuda") or (wanted == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingError("--device cuda was asked for but no CUDA GPU is available")
        return "cuda" if wanted == "auto" else wanted
    if wanted == "mps":
        raise TrainingError("QLoRA (bitsandbytes 4-bit) does not run on Apple GPUs; use --method lora")
    # bitsandbytes >= 0.45 has CPU kernels for 4-bit layers; older builds fail here.
    try:
        import bitsandbytes.functional as bnbf

        probe = torch.randn(64, 64)
        packed, state = bnbf.quantize_4bit(probe, quant_type="nf4")
        restored = bnbf.dequantize_4bit(packed, state)
        if restored.shape != probe.shape or not torch.isfinite(restored).all():
            raise RuntimeError("4-bit round trip gave a wrong result")
    except Exception as exc:  # noqa: BLE001 - any failure means: not usable on this CPU
        raise TrainingError(f"QLoRA needs an NVIDIA GPU with CUDA, or a bitsandbytes build with CPU "
                            f"support ({exc}); use --method lora on this machine") from exc
    return "cpu"


def _load_qlora_captioner(base: str, config: TrainingConfig) -> Any:
    """The base model quantized to 4 bit (bitsandbytes NF4), inside its family's captioner.

    On CUDA the 4-bit layers compute in bf16 (fp16 where bf16 is missing); on a CPU,
    where bitsandbytes also runs, in fp32 — slower than plain LoRA, but the base model
    takes ~1/4 of the memory, which is what lets a large model (BLIP-2) train at all.
    The weights are loaded once, already quantized, through the same loader as for
    captioning (family class, processor, prompts, error messages).
    """
    import torch
    from transformers import BitsAndBytesConfig

    from core.captioning import load_captioner

    device = _qlora_device(config)
    if device.startswith("cuda"):
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        device_map: dict[str, Any] = {"": torch.device(device).index or 0}
    else:
        compute, device_map = torch.float32, {"": "cpu"}
        log.warning("QLoRA on the CPU: the base model is held in 4 bit to save memory, "
                    "but steps are slower than --method lora")
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute,
                               bnb_4bit_use_double_quant=True)
    return load_captioner(base, device=device, optimize="none",
                          model_kwargs={"quantization_config": quant, "device_map": device_map})


def _keep_4bit_layers_trainable(model: Any) -> int:
    """Keep every bitsandbytes 4-bit layer on its trainable (autograd) path; returns how many.

    bitsandbytes >= 0.50 repacks a ``Linear4bit`` weight into a CPU inference layout the
    first time the layer runs in eval mode without grad (our per-epoch evaluation), and
    from then on uses a kernel whose ``result += bias`` breaks backward ("a view of a leaf
    Variable that requires grad is being used in an in-place operation").  Turning the
    repacking off keeps training and evaluation on the same kernel; a weight that was
    already repacked is converted back.  Older releases have neither attribute: no-op.
    """
    count = 0
    for module in model.modules():
        if not hasattr(module, "support_avx512bf16_for_cpu"):
            continue
        module.support_avx512bf16_for_cpu = False
        weight = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            from bitsandbytes.nn.modules import _convert_weight_packed_for_cpu_inverse

            weight.data, weight.quant_state = _convert_weight_packed_for_cpu_inverse(weight.data, state)
            module.quant_state = weight.quant_state
        count += 1
    return count


def _all_linear_targets(model: Any, frozen_vision: Any | None) -> list[str]:
    """Every ``nn.Linear`` except the LM head (and a frozen vision encoder), as full module names.

    peft's own ``"all-linear"`` keeps BLIP's head (``text_decoder.cls.predictions.decoder``)
    because BLIP does not report it as the output embeddings; that head is tied to the
    input embeddings, so merging a LoRA into it would change the inputs too and the merged
    model would caption differently from the trained one.
    """
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    skip = {id(m) for m in frozen_vision.modules()} if frozen_vision is not None else set()
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or id(module) in skip or module is head:
            continue
        if name.endswith(("lm_head", "predictions.decoder", "output_projection")):
            continue
        names.append(name)
    return names


def _prepare_model(captioner: Any, family: ModelFamily, config: TrainingConfig) -> tuple[Any, Any, Any]:
    """``(trainable, inner, targets)``: the module to optimise/save, the transformers model, LoRA targets."""
    inner = captioner.model
    vision = family.vision_tower(inner)
    targets: Any = None
    if config.uses_lora:
        from peft import LoraConfig, get_peft_model

        if config.method == "qlora":
            from peft import prepare_model_for_kbit_training

            inner = prepare_model_for_kbit_training(inner, use_gradient_checkpointing=False)
            _keep_4bit_layers_trainable(inner)
        targets = config.target_modules or family.lora_targets(inner.config, train_vision=config.train_vision)
        if targets == "all-linear":
            targets = _all_linear_targets(inner, vision if not config.train_vision else None)
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=targets, bias="none")
        with warnings.catch_warnings():
            # peft reads a transformers property deprecated in 5.x; nothing a user can act on.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            trainable = get_peft_model(inner, lora)
        inner = trainable.base_model.model
        if not config.train_vision and vision is not None:
            for p in vision.parameters():  # "all-linear" may have reached into it
                p.requires_grad_(False)
    else:
        trainable = inner
        for p in inner.parameters():
            p.requires_grad_(True)
        if vision is not None and not config.train_vision:
            for p in vision.parameters():
                p.requires_grad_(False)
    if config.gradient_checkpointing:
        # After get_peft_model: enabling it before makes BLIP fail with "a leaf Variable
        # that requires grad is being used in an in-place operation".
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # transformers also hooks the input embeddings so their output requires grad (needed
        # by *reentrant* checkpointing only).  Under LoRA that output is a frozen leaf, and
        # GIT adds its position embeddings to it in place: "a leaf Variable that requires
        # grad is being used in an in-place operation".  Non-reentrant checkpointing does
        # not need the hook.
        if hasattr(inner, "disable_input_require_grads"):
            inner.disable_input_require_grads()
    return trainable, inner, targets


@dataclass
class _PreparedModel:
    """The model made trainable: what to optimise and save, and its (frozen or not) vision tower."""

    trainable: Any  # PeftModel for LoRA/QLoRA, the transformers model for full fine-tuning
    inner: Any  # the transformers model inside (what the family's loss runs)
    targets: Any  # LoRA target modules (stored with the version), None for full
    vision: Any | None
    vision_frozen: bool
    params: list[Any]

    @classmethod
    def build(cls, captioner: Any, family: ModelFamily, config: TrainingConfig) -> _PreparedModel:
        trainable, inner, targets = _prepare_model(captioner, family, config)
        vision = family.vision_tower(inner)
        frozen = vision is not None and not any(p.requires_grad for p in vision.parameters())
        return cls(trainable, inner, targets, vision, frozen, [p for p in trainable.parameters() if p.requires_grad])

    def set_train_mode(self) -> None:
        self.trainable.train()
        if self.vision_frozen:
            self.vision.eval()  # frozen encoder: no dropout, so cached == uncached


def _trainable_state(model: Any) -> dict[str, Any]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def _load_trainable_state(model: Any, state: dict[str, Any]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise TrainingError(f"the saved run does not fit this model ({missing[0]} not found)")
    import torch

    with torch.no_grad():
        for n, value in state.items():
            params[n].copy_(value.to(params[n].device))
