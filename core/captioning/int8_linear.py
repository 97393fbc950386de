"""An int8 ``Linear`` whose result for one image does not depend on the rest of the batch.

``torch.ao`` dynamic quantization picks the activation scale from the min/max of the
*whole* input tensor.  In a batch that tensor holds every image's activations, so one
image's int8 rounding - and, now and then, its caption and score - changed with its batch
mates.

:class:`PerImageInt8Linear` runs the same fbgemm/qnnpack int8 kernel once per row of the
leading dimension (one image, or one beam, in every transformers model: ``(batch, tokens,
features)`` or ``(batch, features)``), so each activation scale comes from that row
alone.  The integer GEMM accumulates exactly and the requantisation is element-wise, so a
row's output is bit-identical whatever else is in the batch - the same numbers as
captioning that image alone.

A decoder's one-token steps (one row per image or beam) would pay a kernel call per image
for a matrix-vector product; there one ``torch._int_mm`` over all rows is 2-4x faster, with
each row quantized symmetrically on its own scale: the integer sums are exact and the rest
is element-wise, so a row's result is again independent of the others.  Which way a call
goes depends on its tokens per image, never on the batch size (docs/optimization-notes.md,
"Per-image int8 Linear").

This module imports torch at import time: import it only where int8 is applied.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

__all__ = ["PerImageInt8Linear", "per_image"]


@functools.cache
def _int_mm_runs() -> bool:
    """Whether this build's CPU ``torch._int_mm`` works (not every platform's has it)."""
    try:
        torch._int_mm(torch.ones(1, 8, dtype=torch.int8), torch.ones(8, 8, dtype=torch.int8))
    except (RuntimeError, NotImplementedError):
        return False
    return True


class PerImageInt8Linear(nn.Module):
    """Wraps a dynamically quantized ``Linear``; quantizes activations per leading row."""

    def __init__(self, quantized: nn.Module) -> None:
        super().__init__()
        self.quantized = quantized
        self.in_features = getattr(quantized, "in_features", None)
        self.out_features = getattr(quantized, "out_features", None)

    @property
    def weight(self) -> torch.Tensor:  # some transformers code reads .weight.dtype / .device
        return self.quantized.weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.dim() == 2 or (x.dim() == 3 and x.shape[1] == 1)) and self._symmetric_weights():
            return self._one_token_rows(x)
        if x.dim() < 2 or x.shape[0] == 1:
            return self.quantized(x)
        # One kernel call per image (row of dim 0): its scale sees only its own activations.
        return torch.cat([self.quantized(x[i : i + 1]) for i in range(x.shape[0])])

    def _symmetric_weights(self) -> bool:
        """Whether the weights are per-channel int8 with zero points 0 (what ``_int_mm`` needs);
        caches them transposed for it on first use."""
        if not hasattr(self, "_int8_t"):
            weight = self.quantized.weight()
            symmetric = (weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
                         and not bool(weight.q_per_channel_zero_points().any()) and _int_mm_runs())
            self._int8_t = weight.int_repr().t().contiguous() if symmetric else None
            self._weight_scale = weight.q_per_channel_scales().to(torch.float32) if symmetric else None
            bias = self.quantized.bias()
            self._bias = None if bias is None else bias.detach().to(torch.float32)
        return self._int8_t is not None

    def _one_token_rows(self, x: torch.Tensor) -> torch.Tensor:
        """One integer product for all rows, each row's activations on their own scale."""
        rows = x.reshape(-1, x.shape[-1]).to(torch.float32)
        scale = rows.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
        quantized = torch.round(rows / scale).to(torch.int8)
        out = torch._int_mm(quantized, self._int8_t).to(torch.float32) * scale * self._weight_scale
        if self._bias is not None:
            out = out + self._bias
        return out.reshape(*x.shape[:-1], out.shape[-1]).to(x.dtype)

    def extra_repr(self) -> str:
        return "activation scale per image (batch-independent)"


def per_image(model: nn.Module) -> int:
    """Wrap every dynamic int8 ``Linear`` in *model* (in place); returns how many were wrapped."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantLinear

    targets = [name for name, module in model.named_modules() if type(module) is DynamicQuantLinear]
    for name in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if isinstance(parent, PerImageInt8Linear):
            continue
        setattr(parent, attr, PerImageInt8Linear(getattr(parent, attr)))
    return len(targets)
