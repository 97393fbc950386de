"""The learning-rate range test: a run without ``lr`` finds its rate on the user's own data.

As fastai's ``lr_find`` and PyTorch Lightning's tuner do: a short explicit loop of
``steps`` optimiser steps (AdamW, the run's batch size, weight decay and clipping) whose
rate rises exponentially from ``START_LR`` to ``END_LR``, stopping early once the smoothed
loss exceeds ``DIVERGED`` x its best.  The rate is picked from the smoothed curve by
fastai's ``lr_min`` rule, a tenth of the rate at the lowest loss, because that is still on
the steep, falling part of the curve yet an order of magnitude below where it stops
improving; fastai's newer ``valley`` rule picked 2.5e-4 on the tiny BLIP restyle task (its
longest falling stretch began in the noise of the flat start), which learned nothing.

The test runs on the prepared model itself and leaves it exactly as it found it: the
trainable weights and buffers are copied to the CPU first and put back afterwards, its
optimiser is its own (discarded), and torch's random generators are forked, so the real
run starts from the untouched model and draws the same dropout as a run given ``--lr``.

The choice is compared with the family's published fine-tuning rates
(``ModelFamily.published_lr``, one table per family in ``core/captioning/families/``): the
tiny test models want far higher rates than real checkpoints, and nothing here can try a
real one, so the note says when the choice falls outside what the family's authors used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.jobs import CancelToken

from .result import Report

__all__ = ["END_LR", "RULE", "START_LR", "LrRangeResult", "compare_with_published", "lr_note", "range_test_steps",
           "find_learning_rate", "run_range_test", "suggest_lr"]

START_LR = 1e-7
END_LR = 1.0
#: Stop once the smoothed loss is this many times its best: the rate is past usable.
DIVERGED = 4.0
#: Exponential smoothing of the loss (bias-corrected, as fastai); 0.9 suits a curve of <= 100 points.
SMOOTHING = 0.9
RULE = "min/10"
METHOD_LABELS = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}


def range_test_steps(total_steps: int) -> int:
    """Steps of the test: the run's own step count, at least 40 (fewer leave under 6 points per decade of
    the 7 it sweeps, too coarse to find the fall) and at most 100."""
    return min(100, max(40, total_steps))


@dataclass
class LrRangeResult:
    """What the range test found, as stored with the version (``config["lr_range"]``)."""

    lr: float
    rule: str
    steps: int
    #: ``[lr, smoothed loss]`` per step, in order (JSON-friendly lists).
    curve: list[list[float]]
    family: str = ""
    method: str = ""
    #: The family's published rate range for this method, ``[low, high]``, and whose recipe it is.
    published: list[float] | None = None
    published_source: str = ""
    #: ``lr`` lies inside ``published`` (None: no published range).
    inside: bool | None = None
    #: The curve never fell: ``lr`` is the family's default instead of a pick.
    fallback: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LrRangeResult:
        return cls(**data)

    def note(self) -> str:
        return lr_note(self)


def suggest_lr(lrs: list[float], losses: list[float]) -> float | None:
    """A tenth of the rate at the lowest smoothed loss; None when the loss never fell below its start."""
    if len(losses) < 3:
        return None
    best = min(range(len(losses)), key=losses.__getitem__)
    if best == 0 or losses[best] >= losses[0] * 0.98:
        return None
    return float(lrs[best]) / 10


def compare_with_published(family: Any, method: str, lr: float) -> tuple[list[float] | None, str, bool | None]:
    """``(published [low, high] or None, whose recipe, lr inside it or None)`` for *family* and *method*."""
    table = getattr(family, "published_lr", None) or {}
    span = table.get(method)
    if span is None:
        return None, "", None
    low, high = float(span[0]), float(span[1])
    return [low, high], str(getattr(family, "published_lr_source", "") or family.id), low <= lr <= high


def _fmt(value: float) -> str:
    return f"{value:.0e}" if f"{value:.1e}".split("e")[0].endswith(".0") else f"{value:.1e}"


def lr_note(test: LrRangeResult) -> str:
    """The sentence after "Learning rate: ..." (CLI, Train dialog): how it was chosen and the published range."""
    how = (f"range test over {test.steps} steps found no falling loss; the family's default"
           if test.fallback else f"range test over {test.steps} steps")
    method = METHOD_LABELS.get(test.method, test.method)
    if test.published is None:
        return f"{how}; no published range for {test.family or 'this family'} {method}"
    low, high = test.published
    span = _fmt(low) if low == high else f"{_fmt(low)}–{_fmt(high)}"
    verdict = "inside it" if test.inside else "outside it — check on your data, or pass --lr"
    return f"{how}; published range for {test.published_source} {method} is {span}: {verdict}"


def _smoothed(losses: list[float]) -> list[float]:
    out, avg = [], 0.0
    for i, loss in enumerate(losses, 1):
        avg = SMOOTHING * avg + (1 - SMOOTHING) * loss
        out.append(avg / (1 - SMOOTHING**i))
    return out


def run_range_test(model: Any, loss_of: Callable[[Any], Any], batches: Callable[[int], Any], *,
                   steps: int, config: Any, device: Any, amp_dtype: Any = None,
                   report: Report | None = None, cancel: CancelToken | None = None,
                   default_lr: float, family: Any = None) -> LrRangeResult | None:
    """The range test on *model* (a ``_PreparedModel``), restored afterwards; None when cancelled.

    *batches(i)*: the i-th micro-batch (on *device*); *loss_of(batch)*: its scalar loss.
    *config* gives ``weight_decay``, ``max_grad_norm``, ``method``; *default_lr* is used
    (``fallback``) when the curve never falls.
    """
    import torch

    params = model.params
    saved = {id(p): p.detach().to("cpu", copy=True) for p in params}
    buffers = [(b, b.detach().to("cpu", copy=True)) for b in model.trainable.buffers()]
    lrs: list[float] = []
    raw: list[float] = []
    cancelled = False
    ratio = (END_LR / START_LR) ** (1 / max(1, steps - 1))
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            optimizer = torch.optim.AdamW(params, lr=START_LR, weight_decay=config.weight_decay)
            scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
            model.set_train_mode()
            best = math.inf
            for step in range(steps):
                if cancel is not None and cancel.is_set():
                    cancelled = True
                    break
                lr = START_LR * ratio**step
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = loss_of(batches(step))
                value = float(loss.detach())
                if not math.isfinite(value):
                    break
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                lrs.append(lr)
                raw.append(value)
                smooth = _smoothed(raw)[-1]
                best = min(best, smooth)
                if report is not None:
                    report(step + 1, steps, f"Finding the learning rate: {lr:.1e}, loss {smooth:.4f}")
                if step > 5 and smooth > DIVERGED * best:
                    break
            optimizer.zero_grad(set_to_none=True)
            del optimizer
    finally:
        with torch.no_grad():
            for p in params:
                p.copy_(saved[id(p)].to(p.device))
                p.grad = None
            for b, value in buffers:
                b.copy_(value.to(b.device))
    if cancelled:
        return None
    smooth = _smoothed(raw)
    pick = suggest_lr(lrs, smooth)
    method = getattr(config, "method", "")
    chosen = default_lr if pick is None else pick
    published, source, inside = compare_with_published(family, method, chosen) if family is not None \
        else (None, "", None)
    return LrRangeResult(lr=chosen, rule=RULE, steps=len(raw), curve=[[a, round(b, 5)] for a, b in zip(lrs, smooth)],
                         family=getattr(family, "id", ""), method=method, published=published,
                         published_source=source, inside=inside, fallback=pick is None)


#: The range test's result in a run folder: a resumed run keeps the rate it started with.
RESULT_FILE = "lr_range.json"


def find_learning_rate(captioner: Any, family: Any, model: Any, examples: Any, config: Any, run_dir: Path,
                       report: Report, cancel: CancelToken, distributed: Any = None,
                       steps: int | None = None) -> LrRangeResult | None:
    """The run's rate: the range test on its training examples (or the one saved in *run_dir* by the
    run being resumed); None when cancelled.  Several processes: rank 0 tests, every rank gets its choice.
    *steps*: the test's length (default :func:`range_test_steps` of the run's optimiser steps)."""
    import torch

    from .loop import _autocast_dtype, _micro_batch

    saved = run_dir / RESULT_FILE
    main = distributed is None or distributed.is_main
    found: LrRangeResult | None = None
    if saved.is_file():
        try:
            found = LrRangeResult.from_dict(json.loads(saved.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            found = None  # unreadable: test again (deterministic, so the same choice)
    if found is None and main:
        size = examples.size
        micro = math.ceil(size / config.batch_size)
        total = math.ceil(micro / config.grad_accum) * config.epochs
        generator = torch.Generator().manual_seed(config.seed * 104_729 + 17)
        device = captioner.device

        def batch(_step: int) -> Any:
            idx = torch.randperm(size, generator=generator)[: config.batch_size]
            return _micro_batch(captioner, family, examples, idx, device)

        found = run_range_test(model, lambda b: family.loss(model.inner, b), batch, steps=steps or range_test_steps(total),
                               config=config, device=device, amp_dtype=_autocast_dtype(config, device),
                               report=report, cancel=cancel, default_lr=config.fallback_lr(family), family=family)
        if found is not None:
            saved.write_text(json.dumps(found.to_dict()), encoding="utf-8")
    if distributed is not None:
        shared = distributed.share(found.to_dict() if main and found is not None else None)
        found = LrRangeResult.from_dict(shared) if shared is not None else None
    return found
