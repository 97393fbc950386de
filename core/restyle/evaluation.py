"""A restyler version's held-out predictions, for ``eval`` (:func:`core.training.evaluate_model`).

A restyler is scored like a captioner with the caption metrics, on the restyled text: the
library's (model caption → verified caption) pairs are split as its training split them
(the ``val_ratio`` and ``seed`` it was trained with, unless others are asked for), the
held-out pairs are the test split when the library has enough pairs for one
(:data:`core.splits.MIN_TEST`), else the validation split, and each pair's description is
restyled with the version's style prompt.  The metrics themselves are computed by the
caller, in :mod:`core.training.evaluation`, as for captioners.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .model import DEFAULT_STYLE, RestyleSettings, load_restyler
from .pairs import collect_restyle_pairs
from .spec import RestyleError

if TYPE_CHECKING:
    from core.models import ModelVersion

#: Tokens a restyled text may take when the version's training settings do not say.
DEFAULT_MAX_NEW_TOKENS = 60


@dataclass
class RestylerPredictions:
    """The restyled held-out pairs: ``(image_id, restyled text, verified text)`` each, and the split."""

    split: dict[str, Any]
    predictions: list[tuple[int, str, str]] = field(default_factory=list)
    #: Evaluated image ids that were training pairs of the version (an explicitly asked split can have them).
    train_overlap: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def restyler_split(version: ModelVersion, val_ratio: float | None, seed: int | None) -> dict[str, Any]:
    """The split to score: the version's training split unless a setting is given explicitly."""
    from core.splits import DEFAULT_SEED, DEFAULT_VAL_RATIO

    trained = ((version.config or {}).get("training") or {})
    defaults = {"val_ratio": trained.get("val_ratio", DEFAULT_VAL_RATIO), "seed": trained.get("seed", DEFAULT_SEED)}
    asked = {"val_ratio": val_ratio, "seed": seed}
    split = {k: defaults[k] if asked[k] is None else asked[k] for k in defaults}
    split["include_imports"] = False
    split["source"] = "version" if all(split[k] == defaults[k] for k in defaults) else "asked"
    return split


def restyle_held_out(library: Any, version: ModelVersion, *, val_ratio: float | None = None, seed: int | None = None,
                     device: str = "auto", batch_size: int = 16, restyler: Any | None = None,
                     progress: Callable[[Any], None] | None = None, cancel: Any = None) -> RestylerPredictions:
    """Restyle the held-out pairs of *version*'s split (see the module docstring).

    Raises :class:`~core.restyle.spec.RestyleError` when the split holds no pair to score."""
    from core.jobs import Progress

    split = restyler_split(version, val_ratio, seed)
    pairs = collect_restyle_pairs(library, val_ratio=split["val_ratio"], seed=split["seed"])
    held_out = pairs.test or pairs.validation
    split["held_out"] = "test" if pairs.test else "validation"
    if not held_out:
        raise RestyleError(f"no held-out restyle pairs to score ({pairs.summary()} at validation ratio "
                           f"{split['val_ratio']:g}); correct more model captions, or raise --val-ratio")
    config = version.config or {}
    max_new_tokens = int((config.get("training") or {}).get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
    settings = RestyleSettings(config.get("style") or DEFAULT_STYLE, max_new_tokens)
    trained_on = set((version.data_snapshot or {}).get("train") or [])
    result = RestylerPredictions(split)
    owns = restyler is None
    if restyler is None:
        restyler = load_restyler(version.base_model, version.adapter_path, device=device)
    try:
        for start in range(0, len(held_out), batch_size):
            if cancel is not None and cancel.is_set():
                break
            chunk = held_out[start : start + batch_size]
            for pair, restyled in zip(chunk, restyler.restyle([p.source for p in chunk], settings), strict=True):
                if isinstance(restyled, BaseException):
                    result.problems.append(f"pair of image {pair.image_id}: {restyled}")
                    text = ""  # scored as a miss, as training's validation scores it
                else:
                    text = restyled.text
                result.predictions.append((pair.image_id, text, pair.target))
                if pair.image_id in trained_on:
                    result.train_overlap.append(pair.image_id)
            if progress is not None:
                progress(Progress(min(start + batch_size, len(held_out)), len(held_out), "Evaluating"))
    finally:
        if owns:
            restyler.close()
    return result
