"""The stored confidence score (core/captioning/confidence.py)."""

from __future__ import annotations

import math

import pytest

from core.captioning.captioner import CaptionResult
from core.captioning.confidence import SCORE_KINDS, TokenCalibration, caption_scores, confidence_score

A, ON, RED, BLUE, EOS = 1, 2, 3, 4, 9


def _result(tokens: list[tuple[int, float]], margins: tuple[float, ...] = ()) -> CaptionResult:
    ids, lps = zip(*tokens, strict=True)
    return CaptionResult("x", sum(lps) / len(lps), tuple(ids), tuple(lps), margins or tuple(1.0 for _ in ids))


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
    scores = confidence_score(result)[2]
    assert scores == {"mean_logprob": result.score, "min_token_logprob": -2.0, "min_margin": 1.0}
    assert confidence_score(CaptionResult("x", -0.7))[:2] == (-0.7, "mean_logprob")


def test_min_margin_ranks_a_near_tie_below_uniformly_unsure_template_words() -> None:
    # Template words the restyled model is unsure of, yet each the clear winner (margin 2):
    sure = _result([(A, -1.5), (RED, -0.05), (ON, -1.4), (EOS, -0.1)], (2.0, 3.0, 2.0, 4.0))
    # A confident-looking caption whose colour was nearly a tie with another colour:
    tie = _result([(A, -0.2), (RED, -0.6), (ON, -0.2), (EOS, -0.1)], (4.0, 0.1, 4.0, 4.0))
    assert tie.score > sure.score  # the mean puts the doubtful one first in the queue's safe end
    assert caption_scores(tie)["min_margin"] < caption_scores(sure)["min_margin"]


def test_the_captioner_reports_each_tokens_margin_over_the_runner_up(tiny_blip_dir) -> None:
    import torch
    from PIL import Image

    from core.captioning import load_captioner
    from core.captioning.captioner import token_scores

    with load_captioner(str(tiny_blip_dir), device="cpu", optimize="none") as captioner:
        (result,) = captioner.caption([Image.new("RGB", (32, 32), (200, 30, 30))])
    assert len(result.token_margins) == len(result.token_ids) > 0
    # Greedy decoding writes the most likely token: every margin is >= 0.
    assert all(m >= -1e-5 for m in result.token_margins)
    # By hand: token 2 was written and token 0 is the best other one; writing token 0 gives the negative.
    logits = [torch.log(torch.tensor([[0.3679, 0.1, 0.9048]]))]
    _, _, lps, margins = token_scores(torch.tensor([[5, 2]]), logits, eos_token_ids=[])
    expected = torch.log_softmax(logits[0], -1)[0]
    assert float(margins[0, 0]) == pytest.approx(float(expected[2] - expected[0]), abs=1e-6)
    _, _, _, margins = token_scores(torch.tensor([[5, 0]]), logits, eos_token_ids=[])
    assert float(margins[0, 0]) == pytest.approx(float(expected[0] - expected[2]), abs=1e-6)  # not the argmax: < 0
