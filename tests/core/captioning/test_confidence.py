"""The stored confidence score (core/captioning/confidence.py)."""

from __future__ import annotations

import math

from core.captioning.captioner import CaptionResult
from core.captioning.confidence import SCORE_KINDS, TokenCalibration, caption_scores, confidence_score

A, ON, RED, BLUE, EOS = 1, 2, 3, 4, 9


def _result(tokens: list[tuple[int, float]]) -> CaptionResult:
    ids, lps = zip(*tokens, strict=True)
    return CaptionResult("x", sum(lps) / len(lps), tuple(ids), tuple(lps))


def test_calibration_cancels_template_words_and_flags_the_informative_token() -> None:
    # A restyled model: template words uniformly unsure (-1.5), the colour usually sure.
    right = [_result([(A, -1.5), (RED, -0.05), (ON, -1.4), (EOS, -0.1)]) for _ in range(8)]
    wrong = _result([(A, -1.4), (RED, -0.9), (ON, -1.3), (EOS, -0.1)])  # the colour is the doubt
    noisy_right = _result([(A, -2.0), (RED, -0.05), (ON, -1.9), (EOS, -0.1)])
    # The mean ranks the wrong caption *above* a right one whose template words were less sure...
    assert wrong.score > noisy_right.score
    assert caption_scores(wrong)["min_token_logprob"] > caption_scores(noisy_right)["min_token_logprob"]
    # ...the calibrated score ranks it below every right one.
    cal = TokenCalibration.fit([*right, wrong, noisy_right])
    wrong_score = caption_scores(wrong, cal)["calibrated_min_token"]
    assert all(wrong_score < caption_scores(r, cal)["calibrated_min_token"] for r in [*right, noisy_right])
    # The stored kind is the measured best (benchmarks/confidence.py); every kind is reported.
    score, kind, scores = confidence_score(wrong, cal)
    assert (score, kind) == (wrong.score, "mean_logprob") and set(scores) == set(SCORE_KINDS)
    # Unseen tokens fall back to the mean of all fitted tokens; round trip through JSON.
    assert math.isclose(cal.deviations([BLUE], [-1.0])[0], -1.0 - cal.fallback)
    assert TokenCalibration.from_dict(cal.to_dict()).deviations([A], [-1.0]) == cal.deviations([A], [-1.0])


def test_without_calibration_no_calibrated_kinds_and_without_tokens_only_the_mean() -> None:
    result = _result([(A, -0.2), (RED, -2.0), (EOS, -0.1)])
    assert confidence_score(result) == (result.score, "mean_logprob", {"mean_logprob": result.score,
                                                                      "min_token_logprob": -2.0})
    assert confidence_score(CaptionResult("x", -0.7))[:2] == (-0.7, "mean_logprob")
