"""A version's error model (core/captioning/calibration.py) and the score it gives
(``calibrated_p_right`` in core/captioning/confidence.py)."""

from __future__ import annotations

import dataclasses
import random

import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from core.captioning.calibration import (
    MIN_PER_CLASS,
    PHOTO_FEATURES,
    SCORE_FEATURES,
    ErrorModel,
    fit_error_model,
    photo_features,
    with_photo_features,
)
from core.captioning.captioner import CaptionResult
from core.captioning.confidence import TokenCalibration, caption_scores, confidence_score


def _vivid(size: int = 200) -> Image.Image:
    image = Image.new("RGB", (size, size), (10, 10, 10))
    draw = ImageDraw.Draw(image)
    draw.rectangle((size // 4, size // 4, size // 2, size // 2), fill=(230, 20, 20))
    draw.ellipse((size // 2, size // 2, size - 10, size - 10), fill=(20, 40, 230))
    return image


def _features(image: Image.Image) -> dict[str, float]:
    return dict(zip(PHOTO_FEATURES, photo_features(image), strict=True))


def test_photo_measurements_see_a_washed_out_or_blurred_photo() -> None:
    vivid = _features(_vivid())
    washed = _features(Image.blend(_vivid(), Image.new("RGB", (200, 200), (128, 128, 128)), 0.85))
    blurred = _features(_vivid().filter(ImageFilter.GaussianBlur(6)))
    dark = _features(ImageEnhance.Brightness(_vivid()).enhance(0.3))
    assert washed["contrast"] < vivid["contrast"] / 3 and washed["colourfulness"] < vivid["colourfulness"] / 3
    assert blurred["sharpness"] < vivid["sharpness"] - 2  # log variance of the Laplacian
    assert dark["brightness"] < vivid["brightness"]
    # Measured on a fixed-size copy: a photo decoded at another size measures (nearly) the same.
    small = _features(_vivid().resize((100, 100), Image.Resampling.LANCZOS))
    assert small["contrast"] == pytest.approx(vivid["contrast"], rel=0.05)
    assert small["colourfulness"] == pytest.approx(vivid["colourfulness"], rel=0.05)


def _photo(rng: random.Random, *, faint: bool) -> Image.Image:
    image = Image.new("RGB", (64, 64), (10, 10, 10))
    x, y, r = rng.randrange(12, 52), rng.randrange(12, 52), rng.randrange(5, 12)
    ImageDraw.Draw(image).ellipse((x - r, y - r, x + r, y + r), fill=rng.choice([(230, 20, 20), (20, 40, 230)]))
    return Image.blend(image, Image.new("RGB", (64, 64), (128, 128, 128)), 0.85) if faint else image


def _scenario(seed: int, n: int = 200) -> tuple[list[dict[str, float]], list[bool]]:
    """Captions of a version that misreads faint photos: its scores barely tell right from
    wrong, the photos' measurements do."""
    rng = random.Random(seed)
    rows, wrong = [], []
    for _ in range(n):
        faint = rng.random() < 0.25
        is_wrong = rng.random() < (0.85 if faint else 0.1)
        logprob = rng.gauss(-0.5 if is_wrong else -0.4, 0.2)
        rows.append({"mean_logprob": logprob, "margin_logsig_sum": rng.gauss(-0.3, 0.2),
                     "min_margin": rng.gauss(2.0, 0.5), "min_token_logprob": 2 * logprob,
                     **_features(_photo(rng, faint=faint))})
        wrong.append(is_wrong)
    return rows, wrong


def _auroc_low_means_wrong(scores: list[float], wrong: list[bool]) -> float:
    bad = [s for s, w in zip(scores, wrong, strict=True) if w]
    good = [s for s, w in zip(scores, wrong, strict=True) if not w]
    return sum((b < g) + 0.5 * (b == g) for b in bad for g in good) / (len(bad) * len(good))


def test_the_error_model_learns_which_photos_a_version_gets_wrong_and_ranks_unseen_ones() -> None:
    rows, wrong = _scenario(seed=1)
    model = ErrorModel.fit(rows, wrong)
    assert model is not None and model.features == SCORE_FEATURES + PHOTO_FEATURES and model.fitted_on == 200
    # Fitted on one set of captions, judged on another it never saw.
    test_rows, test_wrong = _scenario(seed=2)
    fitted = _auroc_low_means_wrong([model.p_right(r) for r in test_rows], test_wrong)
    plain = _auroc_low_means_wrong([r["mean_logprob"] for r in test_rows], test_wrong)
    assert fitted > 0.85 and fitted > plain + 0.15, (fitted, plain)
    # Faint photos are what it learnt to doubt: a measure of the washed-out look carries the largest weight.
    weights = dict(zip(model.features, model.weights, strict=True))
    strongest = max(weights, key=lambda f: abs(weights[f]))
    assert strongest in ("contrast", "colourfulness") and weights[strongest] > 0, weights
    # Stored as JSON and read back: the same answers; a damaged record is no model at all.
    again = ErrorModel.from_dict(model.to_dict())
    assert again is not None
    assert [again.p_right(r) for r in test_rows[:20]] == pytest.approx([model.p_right(r) for r in test_rows[:20]],
                                                                       abs=1e-5)
    assert ErrorModel.from_dict({"features": ["contrast"], "mean": [0.1]}) is None
    assert ErrorModel.from_dict({**model.to_dict(), "weights": [1.0]}) is None
    # A caption missing a feature the model reads gets no calibrated score rather than a made-up one.
    assert model.p_right({k: v for k, v in test_rows[0].items() if k != "contrast"}) is None


def test_too_few_right_or_wrong_captions_fit_no_model_and_long_captions_fall_back_to_the_median() -> None:
    rows, _ = _scenario(seed=3, n=40)
    assert ErrorModel.fit(rows, [i < MIN_PER_CLASS - 1 for i in range(40)]) is None
    assert ErrorModel.fit(rows, [i >= MIN_PER_CLASS - 1 for i in range(40)]) is None
    # Every caption differs from the person's words somewhere: wrong means worse than the median.
    rates = [0.1 + 0.01 * i for i in range(40)]
    model = fit_error_model(rows, rates)
    assert model is not None and model.label == "edit_rate_above_median"
    assert fit_error_model(rows, [0.0] * 40) is None  # all right: nothing to learn from
    broken = [dict(row) for row in rows]
    broken[0]["mean_logprob"] = float("nan")
    assert ErrorModel.fit(broken, [i % 2 == 0 for i in range(40)]) is None
    exact = fit_error_model(rows, [0.0 if i % 3 else 0.5 for i in range(40)])
    assert exact is not None and exact.label == "not_exact"


def _caption(logprob: float) -> CaptionResult:
    return CaptionResult("a red square", logprob, (1, 2, 9), (logprob, logprob, -0.01), (2.0, 1.5, 3.0))


def test_a_version_with_an_error_model_stores_the_chance_its_caption_is_right() -> None:
    rows, wrong = _scenario(seed=4)
    calibration = TokenCalibration({1: -0.5, 2: -0.5, 9: -0.01}, -0.3, ErrorModel.fit(rows, wrong))
    rng = random.Random(5)
    crisp, faint = (with_photo_features([_photo(rng, faint=f)], [_caption(-0.45)])[0] for f in (False, True))
    score, kind, scores = confidence_score(crisp, calibration)
    assert kind == "calibrated_p_right" and score == scores["calibrated_p_right"] and 0 < score < 1
    # Same words, same probabilities: the faint photo's caption is the one to review first.
    assert confidence_score(faint, calibration)[0] < score
    # Unmeasured (e.g. a caption from before) or no error model: the plain stored kind.
    assert confidence_score(_caption(-0.45), calibration)[1] == "mean_logprob"
    assert confidence_score(crisp, TokenCalibration({}, -0.3))[1] == "mean_logprob"
    # With views checked, agreement still comes first and the error model orders within it.
    confirmed = dataclasses.replace(faint, views_checked=2, views_agreeing=2)
    doubted = dataclasses.replace(crisp, views_checked=2, views_agreeing=1)
    assert caption_scores(confirmed, calibration)["view_agreement"] == pytest.approx(
        2 + caption_scores(faint, calibration)["calibrated_p_right"])
    assert confidence_score(doubted, calibration)[0] < confidence_score(confirmed, calibration)[0]
    # Round trip through the version's stored config keeps the error model.
    assert TokenCalibration.from_dict(calibration.to_dict()).error_model == ErrorModel.from_dict(
        calibration.error_model.to_dict())
