"""The confidence score stored on each model caption (``captions.score``, higher = more confident).

The review queue sorts by one number; which number it is is recorded in each caption's
provenance as ``score_kind``.  Kinds (:data:`SCORE_KINDS`):

* ``mean_logprob`` — the mean log-probability of the generated tokens (EOS included).  The
  old score.  After a LoRA restyle its template words can swamp the one informative token
  (see docs/optimization-notes.md, "Confidence score kinds").
* ``min_token_logprob`` — the least likely generated token: a caption is as doubtful as
  its most doubtful word.  Used for models without a calibration (base checkpoints).
* ``calibrated_min_token`` — per model version: each token's log-prob minus what that
  token typically scores in the version's own captions of its validation split
  (:class:`TokenCalibration`, fitted when the version is trained), then the minimum.
  Words a version is uniformly unsure of (template words after a restyle) cancel out;
  a token much less likely than usual stands out.
* ``calibrated_mean`` — the same deviations, averaged: the caption's mean log-prob minus
  what its words typically score, so neither uniformly unsure template words nor
  words that are always hard (a rare colour) decide the rank; one token's noise is
  averaged out, which the minimum is not.

* ``margin_logsig_sum`` — the log of the product over tokens of ``sigmoid(margin)``: each
  token's chance of beating its runner-up, multiplied, so one near-tie and several shaky
  words both count, while template words that win clearly cost nothing.
* ``calibrated_p_right`` — per model version: the chance the caption is right, from the
  version's error model (:class:`core.captioning.calibration.ErrorModel`), fitted on its own
  validation captions from the score kinds above and plain measurements of the photo
  (contrast, colourfulness, sharpness, brightness).  It catches what the probabilities
  cannot: a version that misreads faint photos without hesitating.  The stored kind for a
  version that has one (views not checked).
* ``view_agreement`` — only when the job checked views (``CaptionJobSpec.check_views``):
  the photo is captioned again from slightly shifted and cropped copies, and the score is
  the number of views that gave the same text plus ``calibrated_p_right`` where the version
  has an error model, else ``exp(margin_logsig_sum)`` (both 0..1), so
  a caption the views disagree with always ranks below one they all confirm.  A weak
  model that reads a shape or a word from a few pixels changes its mind when they move;
  the model's own probabilities cannot see that (docs/optimization-notes.md, "Confidence
  score kinds").  It is the stored kind whenever views were checked.
* ``min_margin`` — per generated token, its log-prob minus the best *other* token's at
  that step (how near the runner-up came to being written instead), then the minimum
  over the caption.  A one-word error ("right of" for "under") is typically a step where
  two words were nearly tied; a caption whose words were all clear winners is right even
  when the template words each had low probability, so neither restyled template words
  nor always-hard words need a calibration.

``benchmarks/confidence.py`` measures them on LoRA and fully fine-tuned versions; the
stored kind is ``view_agreement`` when views were checked, else ``calibrated_p_right`` where the
version has an error model, else :data:`STORED_KIND`; the others go to the provenance.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .calibration import PHOTO_FEATURES, ErrorModel

__all__ = ["MAX_VIEW_CHECKS", "SCORE_KINDS", "STORED_KIND", "TokenCalibration", "caption_scores", "check_views",
           "confidence_score", "shifted_views"]

log = logging.getLogger(__name__)

SCORE_KINDS = ("mean_logprob", "min_token_logprob", "calibrated_min_token", "calibrated_mean", "min_margin",
               "margin_logsig_sum", "calibrated_p_right", "view_agreement")
#: The most shifted views a job may check each caption against (each one is a full caption pass).
MAX_VIEW_CHECKS = 4
#: The kind stored as ``captions.score``: the one ``benchmarks/confidence.py`` found to rank
#: wrong captions first best (see docs/optimization-notes.md, "Confidence score kinds").
#: The other kinds are still recorded in each caption's provenance (``scores``).
STORED_KIND = "mean_logprob"


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


@dataclass(frozen=True)
class TokenCalibration:
    """What each token typically scores in one version's captions (log-prob per token id), and
    the version's error model where its validation captions allowed one."""

    baseline: Mapping[int, float]
    #: For tokens never seen while fitting: the mean over all fitted tokens.
    fallback: float
    error_model: ErrorModel | None = None

    @classmethod
    def fit(cls, results: Iterable[Any]) -> TokenCalibration:
        """From captions (:class:`~core.captioning.captioner.CaptionResult`) of held-out images."""
        per_token: dict[int, list[float]] = {}
        for result in results:
            for token, lp in zip(getattr(result, "token_ids", ()), getattr(result, "token_logprobs", ()), strict=True):
                per_token.setdefault(int(token), []).append(float(lp))
        every = [lp for values in per_token.values() for lp in values]
        return cls({t: _mean(v) for t, v in per_token.items()}, _mean(every))

    def deviations(self, token_ids: Sequence[int], logprobs: Sequence[float]) -> list[float]:
        return [lp - self.baseline.get(int(t), self.fallback) for t, lp in zip(token_ids, logprobs, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "token_baseline", "baseline": {str(t): round(v, 5) for t, v in self.baseline.items()},
                "fallback": round(self.fallback, 5),
                **({"error_model": self.error_model.to_dict()} if self.error_model is not None else {})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TokenCalibration | None:
        if not data or data.get("kind") != "token_baseline":
            return None
        return cls({int(t): float(v) for t, v in data["baseline"].items()}, float(data["fallback"]),
                   ErrorModel.from_dict(data.get("error_model")))


def caption_scores(result: Any, calibration: TokenCalibration | None = None) -> dict[str, float]:
    """Every score kind this caption has (the calibrated one only with a calibration)."""
    ids, lps = tuple(getattr(result, "token_ids", ())), tuple(getattr(result, "token_logprobs", ()))
    if not lps:  # a captioner that reports no tokens: only its own mean
        return {"mean_logprob": float(result.score)}
    scores = {"mean_logprob": float(result.score), "min_token_logprob": min(lps)}
    margins = tuple(getattr(result, "token_margins", ()))
    if margins:
        scores["min_margin"] = min(margins)
        scores["margin_logsig_sum"] = sum(_log_sigmoid(m) for m in margins)
    if calibration is not None:
        deviations = calibration.deviations(ids, lps)
        scores["calibrated_min_token"] = min(deviations)
        scores["calibrated_mean"] = _mean(deviations)
        measured = tuple(getattr(result, "photo_features", ()))
        if calibration.error_model is not None and len(measured) == len(PHOTO_FEATURES):
            p_right = calibration.error_model.p_right({**scores, **dict(zip(PHOTO_FEATURES, measured, strict=True))})
            if p_right is not None:
                scores["calibrated_p_right"] = p_right
    checked = getattr(result, "views_checked", 0)
    if checked:
        agreeing = getattr(result, "views_agreeing", 0)
        within = scores.get("calibrated_p_right", math.exp(scores.get("margin_logsig_sum", scores["mean_logprob"])))
        scores["view_agreement"] = agreeing + within
    return scores


def confidence_score(result: Any, calibration: TokenCalibration | None = None) -> tuple[float, str, dict[str, float]]:
    """``(score, score_kind, every score)``: :data:`STORED_KIND`, and every kind for the provenance."""
    scores = caption_scores(result, calibration)
    kind = next(k for k in ("view_agreement", "calibrated_p_right", STORED_KIND) if k in scores)
    return scores[kind], kind, scores


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def shifted_views(image: Any, count: int) -> list[Any]:
    """*count* (at most :data:`MAX_VIEW_CHECKS`) slightly changed copies of a PIL *image*: a
    3 % crop scaled back, shifts right and down by 3 % (wrapping round), a 6 % zoom."""
    from PIL import ImageChops

    width, height = image.size
    d = max(1, round(0.03 * min(width, height)))
    views = [
        lambda: image.crop((d, d, width - d, height - d)).resize((width, height)),
        lambda: ImageChops.offset(image, d, 0),
        lambda: ImageChops.offset(image, 0, d),
        lambda: image.resize((width + 4 * d, height + 4 * d)).crop((2 * d, 2 * d, width + 2 * d, height + 2 * d)),
    ]
    return [make() for make in views[:count]]


def check_views(captioner: Any, settings: Any, images: Sequence[Any], results: Sequence[Any], count: int) -> list[Any]:
    """*results* (one per image; an exception stays as it is) with ``views_checked`` /
    ``views_agreeing``: each image captioned again from :func:`shifted_views`, one batch per view."""
    import dataclasses

    if count < 1:
        return list(results)
    count = min(count, MAX_VIEW_CHECKS)
    todo = [i for i, r in enumerate(results) if not isinstance(r, BaseException)]
    agree = dict.fromkeys(todo, 0)
    views = {i: shifted_views(images[i], count) for i in todo}
    for v in range(count):
        batch = [views[i][v] for i in todo]
        if not batch:
            break
        try:
            texts = [r.text for r in captioner.generate(captioner.preprocess(batch, settings), settings)]
        except Exception as exc:  # noqa: BLE001 - the captions stand; they just go unchecked
            log.warning("checking shifted views failed (%s); these captions keep their plain score", exc)
            return list(results)
        for i, text in zip(todo, texts, strict=True):
            agree[i] += text == results[i].text
    return [dataclasses.replace(r, views_checked=count, views_agreeing=agree[i]) if i in agree else r
            for i, r in enumerate(results)]
