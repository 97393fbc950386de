"""Inference speed optimisations, chosen per device.

``optimize="auto"`` (the default of :func:`~core.captioning.load_captioner`) applies:

* **CPU** - ``sdpa`` + ``int8`` (int8 only for the small families that declare
  ``cpu_int8_eligible``: BLIP, GIT, ViT-GPT2, LLaVA, Idefics3 - each measured, see
  ``benchmarks/caption_model_speed.py``; billion-parameter LLMs such as
  BLIP-2's OPT have activation outliers dynamic int8 handles badly), fp32 weights:

  - ``sdpa``: BLIP's vision attention has no ``attn_implementation="sdpa"`` in
    transformers 5.x, so its modules are switched *per instance* to a subclass
    calling ``F.scaled_dot_product_attention``; :func:`_verify_patch` compares
    the patched and original forward on random input first (``<= 1e-5``), so a
    transformers update that changes ``BlipAttention`` disables the patch
    instead of producing wrong captions.  Other families already use SDPA.
  - ``int8``: ``quantize_dynamic`` on every ``nn.Linear`` (per-channel weight
    scales), each wrapped in a
    :class:`~core.captioning.int8_linear.PerImageInt8Linear` so activations are
    quantized per image, not per batch: a caption and its score are the same in
    any batch.  The LM head becomes a
    :class:`~core.captioning.lm_head.RescoredInt8Head` (top 32 logits
    recomputed in fp32) so int8 rounding never picks the token.
  - Loading on the CPU also tunes glibc's allocator (:mod:`core.allocator`).

* **CUDA / MPS** - ``sdpa`` + ``half`` (bf16 where supported, else fp16).
  No int8: dynamic quantization has only CPU kernels.

``"none"`` loads fp32 and changes nothing (the reference path for tests and
benchmarks).  A comma list (``"sdpa"``, ``"int8"``, ``"sdpa,int8"``,
``"half"``) applies exactly those.

Measurements, where the time goes, and what was tried and not kept (text-decoder
SDPA, per-tensor scales, cross-attention absorption, quantized engines, optimum /
ONNX, torch.compile, decode-ahead threads) are in ``docs/optimization-notes.md``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

__all__ = [
    "OPTIMIZATIONS",
    "AppliedOptimizations",
    "OptimizableFamily",
    "OptimizationPlan",
    "apply_optimizations",
    "parse_optimize",
    "patch_blip_sdpa",
    "plan_optimizations",
    "quantize_int8",
]

log = logging.getLogger(__name__)

#: Optimisations that can be named explicitly in ``optimize="a,b"``.
OPTIMIZATIONS: tuple[str, ...] = ("sdpa", "int8", "half")

#: Numerical tolerance for accepting the SDPA patch (fp32, random input).
SDPA_TOLERANCE = 1e-5


class OptimizableFamily(Protocol):
    """What the optimisations need to know of a model family
    (:class:`~core.captioning.families.base.ModelFamily` is one)."""

    @property
    def sdpa_vision_patch(self) -> bool: ...

    @property
    def cpu_int8_eligible(self) -> bool: ...


# --------------------------------------------------------------------------- planning


def parse_optimize(mode: str) -> frozenset[str] | None:
    """Validate an ``optimize`` string; ``None`` means ``"auto"``.

    Raises:
        ValueError: unknown mode or optimisation name.
    """
    text = mode.strip().lower()
    if text == "auto":
        return None
    if text in ("none", ""):
        return frozenset()
    names = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(names - set(OPTIMIZATIONS))
    if unknown:
        raise ValueError(
            f"unknown optimize value {mode!r} ({', '.join(unknown)}); use 'auto', 'none' or a comma list of "
            f"{', '.join(OPTIMIZATIONS)}"
        )
    return names


@dataclass(frozen=True)
class OptimizationPlan:
    """What to do for one model load: load dtype and post-load transforms."""

    dtype: torch.dtype
    sdpa: bool
    int8: bool
    #: ``optimize="auto"``: int8 is applied only to families with ``cpu_int8_eligible``.
    auto: bool = False


def int8_available() -> bool:
    """Whether dynamic int8 kernels exist for this CPU (fbgemm/x86 or qnnpack on ARM)."""
    import torch

    engines = [e for e in torch.backends.quantized.supported_engines if e != "none"]
    return bool(engines)


def plan_optimizations(mode: str, device: torch.device) -> OptimizationPlan:
    """Resolve ``mode`` for ``device`` (see the module docstring)."""
    import torch

    from .device import default_dtype

    names = parse_optimize(mode)
    if names is None:  # auto
        if device.type == "cpu":
            return OptimizationPlan(dtype=torch.float32, sdpa=True, int8=int8_available(), auto=True)
        return OptimizationPlan(dtype=default_dtype(device), sdpa=True, int8=False, auto=True)
    if "int8" in names and device.type != "cpu":
        raise ValueError(f"optimize 'int8' (dynamic quantization) only runs on the CPU, not on {device.type}")
    if "int8" in names and not int8_available():
        raise ValueError("optimize 'int8' is not supported by this PyTorch build (no quantized engine)")
    if "half" in names:
        # Explicit request: honour it even on CPU (bf16 there, fp16 has no fast CPU kernels).
        dtype = default_dtype(device) if device.type != "cpu" else torch.bfloat16
    else:
        dtype = torch.float32
    return OptimizationPlan(dtype=dtype, sdpa="sdpa" in names, int8="int8" in names)


@dataclass
class AppliedOptimizations:
    """The (possibly replaced) model and the names of what was actually applied."""

    model: Any
    names: list[str] = field(default_factory=list)


def apply_optimizations(
    model: Any,
    *,
    family: OptimizableFamily,
    plan: OptimizationPlan,
    progress: Callable[[str], None] | None = None,
) -> AppliedOptimizations:
    """Apply ``plan`` to a loaded, eval-mode model (adapters already merged)."""
    import torch

    report = progress or (lambda _msg: None)
    applied = AppliedOptimizations(model=model)
    if plan.dtype != torch.float32:
        applied.names.append(str(plan.dtype).removeprefix("torch."))
    # Other families already use SDPA through transformers' attention
    # interface; only what this module changes is reported (it is provenance).
    if plan.sdpa and family.sdpa_vision_patch and patch_blip_sdpa(model):
        applied.names.append("sdpa")
    if plan.int8 and (not plan.auto or family.cpu_int8_eligible):
        report("Quantizing linear layers to int8 for faster CPU inference")
        applied.model = quantize_int8(model)
        applied.names.append("int8")
    return applied


# --------------------------------------------------------------------------- SDPA for BLIP


_SDPA_CLASSES: dict[type, type] = {}


def _sdpa_blip_attention_class(base: type) -> type:
    """Subclass of ``BlipAttention`` (or a look-alike) whose forward uses SDPA.

    Subclassing (rather than assigning ``module.forward``) keeps
    ``isinstance`` checks in transformers' output recorders working and shows
    up in ``repr(model)``.
    """
    cached = _SDPA_CLASSES.get(base)
    if cached is not None:
        return cached
    from torch.nn import functional as F

    def forward(self: Any, hidden_states: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, None]:
        bsz, tgt_len, embed_dim = hidden_states.size()
        # Same layout as BlipAttention: one fused qkv projection,
        # (3, batch, heads, tokens, head_dim) after the permute.
        qkv = (
            self.qkv(hidden_states)
            .reshape(bsz, tgt_len, 3, self.num_heads, embed_dim // self.num_heads)
            .permute(2, 0, 3, 1, 4)
        )
        context = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2],
            dropout_p=self.dropout.p if self.training else 0.0,
            scale=self.scale,
        )
        context = context.transpose(1, 2).reshape(bsz, tgt_len, embed_dim)
        # SDPA never materialises the attention matrix, so no weights to return.
        return self.projection(context), None

    namespace = {
        "forward": forward,
        "__module__": __name__,
        "__doc__": f"{base.__name__} computed with scaled_dot_product_attention.",
    }
    cls = type(f"Sdpa{base.__name__}", (base,), namespace)
    _SDPA_CLASSES[base] = cls
    return cls


def _verify_patch(module: Any, patched_cls: type) -> float:
    """Max abs difference between original and patched forward on random fp32 input."""
    import copy

    import torch

    reference = copy.deepcopy(module).float().cpu().eval()
    candidate = copy.deepcopy(reference)
    candidate.__class__ = patched_cls
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, reference.embed_dim, generator=gen)
    with torch.inference_mode():
        expected = reference(x)[0]
        got = candidate(x)[0]
    return float((expected - got).abs().max())


def patch_blip_sdpa(model: Any) -> int:
    """Route BLIP's vision attention through SDPA; returns the number of modules patched.

    Only modules whose class is exactly transformers' ``BlipAttention`` are
    touched, and only if :func:`_verify_patch` agrees within
    :data:`SDPA_TOLERANCE`.
    """
    from transformers.models.blip.modeling_blip import BlipAttention

    targets = [m for m in model.modules() if type(m) is BlipAttention]
    if not targets:
        return 0
    patched_cls = _sdpa_blip_attention_class(BlipAttention)
    try:
        diff = _verify_patch(targets[0], patched_cls)
    except Exception as exc:  # noqa: BLE001 - an incompatible transformers must not break loading
        log.warning("SDPA patch for BlipAttention disabled: self-check failed (%s)", exc)
        return 0
    if not diff <= SDPA_TOLERANCE:
        log.warning("SDPA patch for BlipAttention disabled: differs from the original by %.3g", diff)
        return 0
    for module in targets:
        module.__class__ = patched_cls
    return len(targets)


# --------------------------------------------------------------------------- int8


def _is_lm_head(name: str, module: Any, model: Any) -> bool:
    """The output projection to the vocabulary (int8 with exact fp32 top-k, see lm_head.py)."""
    get_out = getattr(model, "get_output_embeddings", None)
    try:
        out = get_out() if callable(get_out) else None
    except (AttributeError, NotImplementedError):
        out = None
    return module is out or name.endswith(("lm_head", "cls.predictions.decoder", "output_projection"))


def quantize_int8(model: Any, *, rescore_lm_head: bool = True) -> Any:
    """Dynamic int8 quantization of the model's ``nn.Linear`` layers, in place.

    The LM head becomes a :class:`~core.captioning.lm_head.RescoredInt8Head` (int8 logits,
    the top candidates recomputed in fp32), or stays fp32 with ``rescore_lm_head=False``.
    Every int8 layer quantizes its activations per image
    (:class:`~core.captioning.int8_linear.PerImageInt8Linear`).
    """
    import torch
    from torch import nn

    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao but works in 2.x.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=r".*quantize_per_(tensor|channel).*deprecated", category=UserWarning)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        from .int8_linear import per_image
        from .lm_head import RescoredInt8Head

        heads = [name for name, module in model.named_modules()
                 if type(module) is nn.Linear and _is_lm_head(name, module, model)]
        spec = {
            name: per_channel_dynamic_qconfig
            for name, module in model.named_modules()
            if type(module) is nn.Linear and name not in heads
        }
        if spec:
            model = quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
        if rescore_lm_head:
            for name in heads:
                parent_name, _, attr = name.rpartition(".")
                parent = model.get_submodule(parent_name) if parent_name else model
                setattr(parent, attr, RescoredInt8Head(getattr(parent, attr)))
        # Activation scales per image, not per batch: a caption must not depend on its
        # batch mates (see int8_linear.py).  Covers the rescored head's int8 copy too.
        per_image(model)
        return model
