"""An int8 LM head whose best candidates are scored exactly in fp32.

The LM head (hidden size -> vocabulary) decides every generated token, so the int8 path
used to keep it in fp32.  On the CPU that made it the slowest single layer of each
decoding step: BLIP-base's head is 30524 x 768 fp32 weights (94 MB), read in full for
every token of every batch, and memory-bound, so int8 weights cut its time the most
(see docs/optimization-notes.md, "int8 LM head").

:class:`RescoredInt8Head` gets the int8 speed without letting int8 rounding pick the
token: it computes all logits with a dynamically quantized copy of the head, takes the
:data:`EXACT_TOP_K` largest, and recomputes those from the original fp32 weights
(``k x hidden`` multiply-adds per row, nothing next to the full head).  Greedy and beam
search (up to ``EXACT_TOP_K / 2`` beams) only ever choose among those candidates, so
they choose exactly what the fp32 head would, unless int8 rounding pushed the fp32 best
token out of the top 32 - a gap far beyond the rounding error of an int8 dot product of
this length.  The logits outside the top k are the int8 approximations; they enter the
confidence score only through the softmax denominator, where they are tiny.

The fp32 weight is the model's own parameter (tied to the input embeddings in BLIP, GIT
and GPT-2), so no copy is kept; the int8 copy adds a quarter of its size.

This module imports torch at import time: import it only where int8 is applied.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

__all__ = ["EXACT_TOP_K", "RescoredInt8Head"]

#: Candidates per position whose logits are recomputed in fp32.
EXACT_TOP_K = 32


class RescoredInt8Head(nn.Module):
    """Drop-in replacement for an ``nn.Linear`` LM head (inference only)."""

    def __init__(self, linear: nn.Linear, top_k: int = EXACT_TOP_K) -> None:
        super().__init__()
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k!r}")
        from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantLinear
        from torch.ao.quantization import per_channel_dynamic_qconfig

        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.top_k = min(top_k, linear.out_features)
        # The original fp32 parameters, shared (not copied) with the model.
        self.weight = linear.weight
        self.bias = linear.bias
        # from_float reads the qconfig from the module; a shallow copy carries it without
        # touching the model's own Linear (which shares its parameters with the copy).
        source = copy.copy(linear)
        source.qconfig = per_channel_dynamic_qconfig
        with warnings.catch_warnings():
            # torch.ao.quantization's deprecation notices (see optimize.quantize_int8).
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=r".*quantize_per_(tensor|channel).*deprecated", category=UserWarning)
            self.quantized = DynamicQuantLinear.from_float(source)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.quantized(hidden)
        top = logits.topk(self.top_k, dim=-1).indices  # (..., k)
        rows = self.weight[top]  # (..., k, hidden)
        # A multiply-and-sum per candidate, not a batched matmul: bmm picks different
        # kernels (and summation orders) for different batch sizes, which moved a caption's
        # score in the 7th digit with its batch mates; this reduction is the same per row.
        exact = (rows * hidden.unsqueeze(-2)).sum(-1)
        if self.bias is not None:
            exact = exact + self.bias[top]
        return logits.scatter_(-1, top, exact.to(logits.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, exact_top_k={self.top_k}"
