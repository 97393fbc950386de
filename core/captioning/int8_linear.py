"""An int8 ``Linear`` whose result for one image does not depend on the rest of the batch.

``torch.ao`` dynamic quantization picks the activation scale from the min/max of the
*whole* input tensor.  In a batch that tensor holds every image's activations, so one
image's int8 rounding - and, now and then, its caption and score - changed with its batch
mates (measured: batch 1 vs 8 changed 2 of 100 captions, scores by up to 0.018).

:class:`PerImageInt8Linear` runs the same fbgemm/qnnpack int8 kernel once per row of the
leading dimension (one image, or one beam, in every transformers model: ``(batch, tokens,
features)`` or ``(batch, features)``), so each activation scale comes from that row
alone.  The integer GEMM accumulates exactly and the requantisation is element-wise, so a
row's output is bit-identical whatever else is in the batch - the same numbers as
captioning that image alone.  Cost, measured on the 2-core build box: the vision tower's
``577 x 768`` blocks got slightly faster (cache-sized pieces, 50 -> 40 ms for a
768x2304 layer at batch 8); the decoder's one-token steps pay a call per image
(0.04 -> 0.3 ms per 768x768 layer at batch 8) - see ``docs/optimization-notes.md``.

``torch._int_mm`` with per-row scales was tried first: on this CPU it is slower than the
fp32 GEMM (200 ms vs 133 ms for the 768x2304 layer above), so it would give the int8
speed-up away.

This module imports torch at import time: import it only where int8 is applied.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PerImageInt8Linear", "per_image"]


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
        if x.dim() < 2 or x.shape[0] == 1:
            return self.quantized(x)
        # One kernel call per image (row of dim 0): its scale sees only its own activations.
        return torch.cat([self.quantized(x[i : i + 1]) for i in range(x.shape[0])])

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
