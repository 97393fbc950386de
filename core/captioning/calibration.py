"""A model version's error model: how likely its caption of a photo is right, learnt from the
captions it wrote for its own validation split (``calibrated_p_right`` in
:mod:`core.captioning.confidence`).

The model's token probabilities alone miss the errors a version makes with full confidence:
a faint, dark or washed-out photo it misreads without hesitating.  So the error model sees the
caption's own score kinds *and* a few plain measurements of the photo (contrast, colourfulness,
sharpness, brightness), and a ridge-penalised logistic regression fitted per version on its
validation captions (right = the person's words, word for word) decides how much each counts.
Where the photo's measurements do not predict this version's errors their weights stay near
zero; the fit never sees the photos it is later judged on (benchmarks/confidence.py scores
unseen test photos).  Measurements in docs/optimization-notes.md, "Confidence score kinds".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["PHOTO_FEATURES", "SCORE_FEATURES", "ErrorModel", "fit_error_model", "photo_features",
           "with_photo_features"]

#: Plain measurements of the picture, in the order :func:`photo_features` returns them.
PHOTO_FEATURES = ("contrast", "colourfulness", "sharpness", "brightness")
#: Score kinds (core.captioning.confidence.caption_scores) the error model reads.
SCORE_FEATURES = ("mean_logprob", "margin_logsig_sum", "min_margin", "min_token_logprob")
#: The fewest right and wrong validation captions (each) an error model is fitted from.
MIN_PER_CLASS = 5
#: Photos are measured at this size, so a thumbnail-sized decode and a full one agree.
_MEASURE_SIDE = 256
_RIDGE = 1.0


def photo_features(image: Any) -> tuple[float, ...]:
    """:data:`PHOTO_FEATURES` of a PIL *image*: RMS contrast and mean brightness of the grey
    image (0..1), colourfulness (Hasler and Süsstrunk's opponent-colour measure) and sharpness
    (log variance of the Laplacian), all on a :data:`_MEASURE_SIDE`-pixel square copy."""
    import numpy as np
    from PIL import Image

    small = image.convert("RGB").resize((_MEASURE_SIDE, _MEASURE_SIDE), Image.Resampling.BILINEAR)
    rgb = np.asarray(small, dtype=np.float32) / 255.0
    grey = rgb.mean(axis=2)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    colourfulness = math.hypot(float(rg.std()), float(yb.std())) + 0.3 * math.hypot(float(rg.mean()), float(yb.mean()))
    laplacian = (4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:])
    return (float(grey.std()), colourfulness, math.log(float(laplacian.var()) + 1e-8), float(grey.mean()))


def with_photo_features(images: Sequence[Any], results: Sequence[Any]) -> list[Any]:
    """*results* (one per image; an exception stays as it is) with ``photo_features`` filled in."""
    import dataclasses

    return [r if isinstance(r, BaseException) else dataclasses.replace(r, photo_features=photo_features(image))
            for image, r in zip(images, results, strict=True)]


@dataclass(frozen=True)
class ErrorModel:
    """P(caption right) = sigmoid(bias + weights · standardised features)."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    #: What "wrong" meant when fitting: ``"not_exact"`` or ``"edit_rate_above_median"``.
    label: str
    fitted_on: int

    @classmethod
    def fit(cls, rows: Sequence[Mapping[str, float]], wrong: Sequence[bool], *, label: str = "not_exact",
            features: Sequence[str] = SCORE_FEATURES + PHOTO_FEATURES) -> ErrorModel | None:
        """From per-caption feature values and whether each caption was wrong; None when there
        are fewer than :data:`MIN_PER_CLASS` right or wrong captions, or a feature is missing."""
        import numpy as np

        n_wrong = sum(bool(w) for w in wrong)
        if min(n_wrong, len(wrong) - n_wrong) < MIN_PER_CLASS:
            return None
        if any(f not in row for row in rows for f in features):
            return None
        x = np.array([[float(row[f]) for f in features] for row in rows], dtype=np.float64)
        if not np.isfinite(x).all():
            return None  # a broken score would only teach the model noise
        y = np.array([0.0 if w else 1.0 for w in wrong])  # the model predicts "right"
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale < 1e-9] = 1.0  # a constant feature gets no weight, not a division by zero
        z = np.c_[(x - mean) / scale, np.ones(len(x))]
        beta = np.zeros(z.shape[1])
        penalty = np.diag([_RIDGE] * len(features) + [0.0])  # the bias is not shrunk
        for _ in range(50):  # Newton steps (IRLS); converges in a handful
            p = 1.0 / (1.0 + np.exp(-z @ beta))
            gradient = z.T @ (y - p) - penalty @ beta
            hessian = (z * (p * (1 - p))[:, None]).T @ z + penalty
            try:
                step = np.linalg.solve(hessian, gradient)
            except np.linalg.LinAlgError:
                return None
            beta += step
            if float(np.abs(step).max()) < 1e-8:
                break
        return cls(tuple(features), tuple(float(v) for v in mean), tuple(float(v) for v in scale),
                   tuple(float(v) for v in beta[:-1]), float(beta[-1]), label, len(rows))

    def p_right(self, values: Mapping[str, float]) -> float | None:
        """The chance this caption is right; None when a feature it needs is missing."""
        if any(f not in values for f in self.features):
            return None
        logit = self.bias + sum(w * (float(values[f]) - m) / s
                                for f, m, s, w in zip(self.features, self.mean, self.scale, self.weights, strict=True))
        return 1.0 / (1.0 + math.exp(-logit)) if logit >= 0 else math.exp(logit) / (1.0 + math.exp(logit))

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "mean": [round(v, 6) for v in self.mean],
                "scale": [round(v, 6) for v in self.scale], "weights": [round(v, 6) for v in self.weights],
                "bias": round(self.bias, 6), "label": self.label, "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ErrorModel | None:
        if not data:
            return None
        try:
            model = cls(tuple(str(f) for f in data["features"]), tuple(float(v) for v in data["mean"]),
                        tuple(float(v) for v in data["scale"]), tuple(float(v) for v in data["weights"]),
                        float(data["bias"]), str(data.get("label", "not_exact")), int(data.get("fitted_on", 0)))
        except (KeyError, TypeError, ValueError):
            return None  # a damaged record scores as if there were none
        if not len(model.features) == len(model.mean) == len(model.scale) == len(model.weights):
            return None
        return model


def fit_error_model(rows: Sequence[Mapping[str, float]], edit_rates: Sequence[float]) -> ErrorModel | None:
    """The error model of a version's validation captions (*rows*: score kinds and photo
    features; *edit_rates*: each caption's word edit rate against the person's words).

    Wrong means not word for word the person's caption; where nearly every caption is wrong
    (long descriptions rarely match exactly) or right, wrong means worse than the median
    caption, so the score still ranks the worse half first."""
    wrong = [rate > 0 for rate in edit_rates]
    model = ErrorModel.fit(rows, wrong)
    if model is not None or not edit_rates:
        return model
    median = sorted(edit_rates)[len(edit_rates) // 2]
    return ErrorModel.fit(rows, [rate > median for rate in edit_rates], label="edit_rate_above_median")
