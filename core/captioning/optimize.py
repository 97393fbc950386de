"""Inference speed optimisations, chosen per device.

``optimize="auto"`` (the default of :func:`~core.captioning.load_captioner`) applies:

* **CPU** - ``sdpa`` + ``int8`` (int8 only for the small captioners in
  :data:`INT8_AUTO_FAMILIES`: BLIP, GIT, ViT-GPT2), fp32 weights otherwise:

  - ``sdpa``: BLIP's vision attention (``BlipAttention``) has no
    ``attn_implementation="sdpa"`` in transformers 5.x (asking for it raises
    ``ValueError``) and does ``matmul -> softmax -> matmul`` by hand.  Those
    modules are switched, *per instance* (the model's classes and other
    models in the process are untouched), to a subclass whose forward calls
    ``torch.nn.functional.scaled_dot_product_attention``.  Before the patch
    is kept, :func:`_verify_patch` runs the original and patched forward of
    one module on random input and requires ``max |diff| <= 1e-5`` (fp32),
    so a transformers update that changes ``BlipAttention`` disables the
    patch (with a log warning) instead of producing wrong captions.  The
    other families (BLIP-2, GIT, ViT-GPT2, Florence-2, ...) already use SDPA
    through transformers' attention interface, so nothing is patched there.
  - ``int8``: ``torch.ao.quantization.quantize_dynamic`` on every
    ``nn.Linear``, int8 weights with per-output-channel scales, activations
    quantized per batch at run time.  The LM head becomes a
    :class:`~core.captioning.lm_head.RescoredInt8Head`: int8 logits for the
    whole vocabulary, then the top 32 candidates recomputed from the fp32
    weights, so int8 rounding never picks the token (a plain int8 head flips
    ~4 % of near-tie argmaxes in ``tests``; the rescored one none).  The fp32
    head read its 94 MB of weights for every token: 25 ms of a ~75 ms decoding
    step at batch 8, against 2 ms in int8.
    ``quantize_dynamic`` is deprecated in favour of torchao (which is not a
    dependency); its deprecation warnings (a ``DeprecationWarning`` and a
    ``UserWarning`` about ``quantize_per_channel``) are suppressed here.  Note that
    activation scales are computed per *batch*, so an int8 caption can differ
    slightly depending on which images share its batch (fp32 paths do not).
  - Not an optimisation of the model but of the process: loading on the CPU
    tunes glibc's allocator (:mod:`core.allocator`) so freed activation memory
    is reused instead of being page-faulted in again for every batch
    (~500,000 faults per batch of 8 before; 10-20 % of the batch time).

* **CUDA / MPS** - ``sdpa`` + ``half`` (bf16 where supported, else fp16).
  No int8: dynamic quantization has only CPU kernels.

``"none"`` loads fp32 and changes nothing (the reference path for tests and
benchmarks).  A comma list (``"sdpa"``, ``"int8"``, ``"sdpa,int8"``,
``"half"``) applies exactly those.

Measured here (2-core build box, BLIP-base architecture with random
weights, 384 px, batch 8, exactly 20 tokens greedy, interleaved best-of-3 in
one process; the machine is shared, so single runs vary by 20 % or more):
plain batch-8 fp32 0.67 img/s; + vision SDPA 0.81 (1.2x); + int8 1.13-1.33,
with the same speed for per-tensor/per-channel weight scales (these first
numbers predate the rescored LM head and the allocator tuning).  End to end
through the caption job (``benchmarks/caption_throughput.py``, decode and
commits included, interleaved with the naive loop): ``auto`` with the fp32 LM
head and the default allocator was 2.45-2.79x the naive per-image
``processor -> generate`` loop; with both it is about 3x (see that script's
output in the README).

Evaluated and *not* used:

* SDPA for BLIP's text decoder self/cross attention (``BlipTextSelfAttention``):
  +0-4 % on top of the vision patch at batch 8, within noise, and nothing
  on its own - the decoder attends with one query token per step.  Patching
  it would mean copying transformers' KV-cache bookkeeping into this module,
  which is not worth that risk.
* Per-tensor weight scales: no faster than per-channel, and less accurate.
  (An earlier note here said an int8 LM head was no faster either; measured
  again on a quiet machine it is 12x faster for that layer, which is why the
  rescored head above exists.)
* Absorbing the cross-attention key/value projections into the query side
  (scores ``= (q W_k) H^T``, context ``= (p H) W_v^T + b_v``, so the image tokens
  ``H`` are never projected): it removes the ~0.5 s per batch projection of
  577 x 12 x 2 image keys/values but multiplies each step's cross-attention
  work by the head count; measured 5.02 vs 4.98 s per batch (interleaved) -
  no gain, not kept.
* ``torch.backends.quantized.engine``: ``x86`` (the default), ``fbgemm`` and
  ``onednn`` run the vision MLP within noise of each other (163 / 173 / 154 ms
  for fc1+fc2 at batch 8); ``onednn`` is 3x slower for the decoder's 8-row
  products.  The default is kept.
* ``optimum`` 2.3 (checked in this venv): it ships no ONNX exporter and no
  BetterTransformer any more, and ``optimum.fx.parallelization`` does not
  even import on Python 3.11 (dataclass with a mutable ``slice`` default).
  The exporter moved to ``optimum-onnx``, whose only release (0.1.0)
  requires ``transformers<4.58`` and ``optimum~=2.1`` and has no BLIP,
  BLIP-2 or GIT export config (only VisionEncoderDecoder): it cannot be
  installed next to transformers 5.x and would not cover the default model.
* Where the time goes now (torch profiler, BLIP-base, batch 8, 20 tokens, 2 threads,
  ``auto`` with the rescored head and the allocator tuning; ~6.2-6.9 s per batch):
  int8 Linear 65 % (the vision tower's 784 GOP at ~250 GOP/s, close to what AVX2
  int8 can do on two cores, plus the decoder's one-off projection of the image tokens
  to cross-attention keys and values, ~0.5 s), the vision tower's SDPA 17 % (flash
  kernel; the math path is 2x slower), the decoder's reads of the cached image keys and
  values 8 % (memory-bound, already contiguous), GELU 3 %, KV-cache concatenation 1 %.
  Python overhead of ``generate`` is under 0.2 s per batch (cProfile).  The vision
  tower alone runs 2.0x faster under ``auto`` than in fp32.  Batch 16 is no faster per
  image than batch 8 (1.18 vs 1.20 img/s, interleaved).
  A decode-ahead thread at idle CPU priority (``SCHED_IDLE``) instead
  of decoding in line: 0.90-0.98 vs 0.92-1.00 img/s end to end - no difference.
  ``torch.compile`` of the ``auto`` vision tower: 0.95x (4.99 vs 4.76 s per batch of 8)
  after a 33 s compile - the notes' +1.4x was on the fp32 tower, where int8 already wins.
* From the project's ML stack notes, not re-measured here: a hand
  ``torch.onnx.export`` of the vision tower on onnxruntime gave ~1.2x (fp32) /
  ~1.8x (int8) at batch 8 - no better than SDPA+int8 in torch, for a second
  runtime and a 345 MB export; ``torch.compile`` of the vision tower +1.4x
  but ~40 s of compilation per process and batch shape; bf16 on CPUs
  without bf16 hardware 5-8x slower.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "OPTIMIZATIONS",
    "AppliedOptimizations",
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

#: Families that ``"auto"`` int8-quantizes on CPU.  BLIP-2 and the generic
#: (LLM-based) family are left in fp32 unless ``int8`` is asked for: billion-
#: parameter LLMs such as OPT have activation outliers that per-tensor dynamic
#: int8 quantization handles badly (Dettmers et al., LLM.int8()), and it was
#: not validated on real checkpoints here.
INT8_AUTO_FAMILIES: frozenset[str] = frozenset({"blip", "git", "vision-encoder-decoder"})

#: Numerical tolerance for accepting the SDPA patch (fp32, random input).
SDPA_TOLERANCE = 1e-5


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
    #: ``optimize="auto"``: int8 is applied only to :data:`INT8_AUTO_FAMILIES`.
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
    family: str,
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
    if plan.sdpa and family == "blip" and patch_blip_sdpa(model):
        applied.names.append("sdpa")
    if plan.int8 and (not plan.auto or family in INT8_AUTO_FAMILIES):
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
    """
    import torch
    from torch import nn

    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao but works in 2.x.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=r".*quantize_per_(tensor|channel).*deprecated", category=UserWarning)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

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
        return model
