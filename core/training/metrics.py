"""Caption metrics computed offline in pure Python (no Java, no downloads).

All functions take *hypotheses* (one model caption per image) and *references* (per
image, one human caption or a list of them).  Text is normalised the same way for every
metric by :func:`tokenize`: lower-cased, punctuation removed, split on whitespace —
and Chinese/Japanese characters (Han, kana) one token each, since those languages do not
put spaces between words (a whole Japanese caption would otherwise be a single token,
and two captions differing in one character would share nothing).  Latin text is
tokenized exactly as before (the pycocoevalcap-equality tests).  Korean separates words
with spaces and is left to the whitespace split.

* :func:`bleu4` — corpus BLEU-4 (Papineni et al. 2002): clipped n-gram precisions for
  n = 1..4 summed over the corpus, uniform weights, brevity penalty
  ``exp(1 - r/c)`` when the candidate corpus is shorter than the reference corpus
  (``r`` = closest reference length per sentence).  Smoothing: Chen & Cherry (2014)
  *method 1* — an n-gram order with zero matches gets ``epsilon / total`` with
  ``epsilon = 0.1`` instead of 0, so one missing 4-gram does not zero the score.
  Range 0..1.
* :func:`cider_d` — CIDEr-D (Vedantam et al. 2015, as in ``pycocoevalcap``): TF-IDF
  n-gram vectors (n = 1..4) with document frequencies from the references (one
  document per image), clipped candidate counts, Gaussian length penalty
  (sigma = 6), averaged over references, times 10.  Range 0..10 (10 = every caption
  identical to its reference).  With a single image every idf is 0, so CIDEr is 0.
* :func:`rouge_l` — ROUGE-L F-measure from the longest common subsequence, beta = 1.2
  (pycocoevalcap), best reference per image, mean over images.  Range 0..1.
* :func:`exact_match` — share of images whose normalised caption equals a reference.
* :func:`edit_rate` — word-level Levenshtein distance between model and human caption
  divided by the human caption's length (the word error rate), best reference per
  image, mean over images.  0 = identical; it can exceed 1.

:func:`caption_metrics` returns all of them in one dict (the format stored with a model
version).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = [
    "BLEU_SMOOTHING_EPSILON",
    "bleu4",
    "caption_metrics",
    "cider_d",
    "compare_to_base",
    "comparison_sentence",
    "keyword_set_match",
    "kept_epoch_note",
    "kind_metrics",
    "metric_intervals",
    "edit_rate",
    "edit_rates",
    "exact_match",
    "rouge_l",
    "parse_select_by",
    "selection_score",
    "tokenize",
    "word_edit_distance",
]

BLEU_SMOOTHING_EPSILON = 0.1
CIDER_SIGMA = 6.0
ROUGE_BETA = 1.2

_PUNCT = re.compile(r"[^\w\s']+", re.UNICODE)
#: Scripts written without spaces between words: every character is a token.
_CJK_CHAR = re.compile(
    "[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
    "\U00020000-\U0002fa1f]"
)

Refs = Sequence[str | Sequence[str]]


def tokenize(text: str) -> list[str]:
    """Lower-case words, punctuation removed; each Chinese/Japanese character a word of its own."""
    return _CJK_CHAR.sub(r" \g<0> ", _PUNCT.sub(" ", text.lower())).split()


def _ref_lists(hypotheses: Sequence[str], references: Refs) -> list[list[list[str]]]:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference sets")
    out = []
    for refs in references:
        group = [refs] if isinstance(refs, str) else list(refs)
        if not group:
            raise ValueError("every hypothesis needs at least one reference")
        out.append([tokenize(r) for r in group])
    return out


def _ngrams(words: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


# --------------------------------------------------------------------------- BLEU


def _bleu_stats(hypotheses: Sequence[str], references: Refs) -> list[tuple[int, ...]]:
    """Per image: matches n=1..4, totals n=1..4, candidate length, reference length (summable)."""
    refs = _ref_lists(hypotheses, references)
    stats = []
    for hyp, group in zip(hypotheses, refs, strict=True):
        words = tokenize(hyp)
        # Closest reference length (ties: the shorter), as in NLTK / sacrebleu.
        ref_len = min((abs(len(r) - len(words)), len(r)) for r in group)[1]
        matches, totals = [], []
        for n in range(1, 5):
            counts = _ngrams(words, n)
            max_ref: Counter[tuple[str, ...]] = Counter()
            for r in group:
                max_ref |= _ngrams(r, n)
            matches.append(sum(min(c, max_ref[g]) for g, c in counts.items()))
            totals.append(max(0, len(words) - n + 1))
        stats.append((*matches, *totals, len(words), ref_len))
    return stats


def _bleu_from_stats(summed: Sequence[float], epsilon: float = BLEU_SMOOTHING_EPSILON) -> float:
    matches, totals, hyp_len, ref_len = summed[:4], summed[4:8], summed[8], summed[9]
    if hyp_len == 0:
        return 0.0
    log_precision = 0.0
    for m, t in zip(matches, totals, strict=True):
        if t == 0:
            return 0.0  # no n-grams of this order at all (every caption shorter than n)
        p = m / t if m > 0 else epsilon / t
        log_precision += math.log(p) / 4
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return bp * math.exp(log_precision)


def _sum_stats(stats: Sequence[tuple[int, ...]], idx: Sequence[int] | None = None) -> list[int]:
    total = [0] * 10
    for i in (range(len(stats)) if idx is None else idx):
        for k, v in enumerate(stats[i]):
            total[k] += v
    return total


def bleu4(hypotheses: Sequence[str], references: Refs, *, epsilon: float = BLEU_SMOOTHING_EPSILON) -> float:
    """Corpus BLEU-4 with brevity penalty and Chen & Cherry method-1 smoothing."""
    return _bleu_from_stats(_sum_stats(_bleu_stats(hypotheses, references)), epsilon)


# --------------------------------------------------------------------------- CIDEr-D


def cider_d(hypotheses: Sequence[str], references: Refs, *, sigma: float = CIDER_SIGMA) -> float:
    """Corpus CIDEr-D (mean over images, x10), document frequencies from the references."""
    scores = _cider_scores(hypotheses, references, sigma=sigma)
    return sum(scores) / len(scores) if scores else 0.0


def _cider_scores(hypotheses: Sequence[str], references: Refs, *, sigma: float = CIDER_SIGMA) -> list[float]:
    """Each image's CIDEr-D, document frequencies from all the references."""
    refs = _ref_lists(hypotheses, references)
    if not refs:
        return []
    ref_grams = [[[_ngrams(r, n) for n in range(1, 5)] for r in group] for group in refs]
    df: Counter[tuple[str, ...]] = Counter()
    for group in ref_grams:
        seen: set[tuple[str, ...]] = set()
        for per_n in group:
            for counts in per_n:
                seen.update(counts)
        df.update(seen)
    log_docs = math.log(float(len(refs)))

    def vector(per_n: list[Counter[tuple[str, ...]]]) -> tuple[list[dict[tuple[str, ...], float]], list[float]]:
        vecs, norms = [], []
        for counts in per_n:
            vec = {g: c * (log_docs - math.log(max(1.0, df[g]))) for g, c in counts.items()}
            vecs.append(vec)
            norms.append(math.sqrt(sum(v * v for v in vec.values())))
        return vecs, norms

    scores = []
    for hyp, group, group_grams in zip(hypotheses, refs, ref_grams, strict=True):
        words = tokenize(hyp)
        hyp_vec, hyp_norm = vector([_ngrams(words, n) for n in range(1, 5)])
        total = 0.0
        for ref_words, per_n in zip(group, group_grams, strict=True):
            ref_vec, ref_norm = vector(per_n)
            delta = len(words) - len(ref_words)
            sim = 0.0
            for n in range(4):
                val = sum(min(v, ref_vec[n].get(g, 0.0)) * ref_vec[n].get(g, 0.0) for g, v in hyp_vec[n].items())
                if hyp_norm[n] != 0 and ref_norm[n] != 0:
                    val /= hyp_norm[n] * ref_norm[n]
                sim += val * math.exp(-(delta**2) / (2 * sigma**2))
            total += sim / 4
        scores.append(total / len(group) * 10.0)
    return scores


# --------------------------------------------------------------------------- ROUGE-L


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(hypotheses: Sequence[str], references: Refs, *, beta: float = ROUGE_BETA) -> float:
    """Mean ROUGE-L F-measure (pycocoevalcap: max precision and recall over references)."""
    scores = _rouge_scores(hypotheses, references, beta=beta)
    return sum(scores) / len(scores) if scores else 0.0


def _rouge_scores(hypotheses: Sequence[str], references: Refs, *, beta: float = ROUGE_BETA) -> list[float]:
    refs = _ref_lists(hypotheses, references)
    scores = []
    for hyp, group in zip(hypotheses, refs, strict=True):
        words = tokenize(hyp)
        precisions, recalls = [], []
        for r in group:
            lcs = _lcs(words, r)
            precisions.append(lcs / len(words) if words else 0.0)
            recalls.append(lcs / len(r) if r else 0.0)
        p, r_ = max(precisions), max(recalls)
        scores.append(((1 + beta**2) * p * r_) / (r_ + beta**2 * p) if p and r_ else 0.0)
    return scores


# --------------------------------------------------------------------------- exact match, edit rate


def exact_match(hypotheses: Sequence[str], references: Refs) -> float:
    hits = _exact_scores(hypotheses, references)
    return sum(hits) / len(hits) if hits else 0.0


def _exact_scores(hypotheses: Sequence[str], references: Refs) -> list[float]:
    refs = _ref_lists(hypotheses, references)
    return [float(tokenize(h) in group) for h, group in zip(hypotheses, refs, strict=True)]


def word_edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance between two word sequences (insert, delete, substitute cost 1)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def edit_rate(hypotheses: Sequence[str], references: Refs) -> float:
    """Mean word edit distance / reference length (how much a person would have to change)."""
    rates = edit_rates(hypotheses, references)
    return sum(rates) / len(rates) if rates else 0.0


def edit_rates(hypotheses: Sequence[str], references: Refs) -> list[float]:
    """Each caption's word edit rate against its nearest reference."""
    refs = _ref_lists(hypotheses, references)
    rates = []
    for hyp, group in zip(hypotheses, refs, strict=True):
        words = tokenize(hyp)
        rates.append(min(word_edit_distance(words, r) / max(1, len(r)) for r in group))
    return rates


# --------------------------------------------------------------------------- all together


def caption_metrics(hypotheses: Sequence[str], references: Refs) -> dict[str, float]:
    """Every metric above, rounded to 4 decimals, plus the number of images ``n``."""
    return {
        "bleu4": round(bleu4(hypotheses, references), 4),
        "cider": round(cider_d(hypotheses, references), 4),
        "rouge_l": round(rouge_l(hypotheses, references), 4),
        "exact_match": round(exact_match(hypotheses, references), 4),
        "edit_rate": round(edit_rate(hypotheses, references), 4),
        "n": len(hypotheses),
    }


def keyword_set_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Share of images whose keywords (:func:`core.kinds.parse_keywords`) are exactly the
    reference's, in any order: what a keyword list is judged by, not its word order."""
    from core.kinds import parse_keywords

    if not hypotheses:
        return 0.0
    hits = [set(parse_keywords(h)) == set(parse_keywords(r)) for h, r in zip(hypotheses, references, strict=True)]
    return sum(hits) / len(hits)


def kind_metrics(hypotheses: Sequence[str], references: Sequence[str], kind: str) -> dict[str, float]:
    """:func:`caption_metrics`, plus ``keyword_set_match`` for a keywords kind."""
    from core.kinds import BUILTIN_KINDS

    metrics = caption_metrics(hypotheses, references)
    spec = BUILTIN_KINDS.get(kind)
    if spec is not None and spec.value_type == "keywords":
        metrics["keyword_set_match"] = round(keyword_set_match(hypotheses, references), 4)
    return metrics


#: Metrics an epoch can be chosen by (``--select-by``); ``edit_rate`` counts negatively (lower is better).
SELECTABLE = ("cider", "bleu4", "rouge_l", "exact_match", "edit_rate")
DEFAULT_SELECT_BY = "cider+bleu4"


def parse_select_by(text: str) -> tuple[str, ...]:
    """``"cider+bleu4"`` -> ``("cider", "bleu4")``; ValueError naming the choices for anything else."""
    names = tuple(part.strip().lower().replace("-", "_") for part in str(text).split("+"))
    unknown = [n for n in names if n not in SELECTABLE]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(f"select_by must be metric names joined by '+' (from {', '.join(SELECTABLE)}), "
                         f"each once, not {text!r}")
    return names


def selection_score(metrics: dict[str, float], select_by: str = DEFAULT_SELECT_BY) -> float:
    """How checkpoints are ranked: the sum of the *select_by* metrics (default CIDEr (0..10) +
    BLEU-4 (0..1)), the edit rate subtracted since lower is better."""
    return sum(-float(metrics.get(n, 0.0)) if n == "edit_rate" else float(metrics.get(n, 0.0))
               for n in parse_select_by(select_by))


# --------------------------------------------------------------------------- intervals

#: Bootstrap resamples, the interval's level and its seed: fixed, so the same captions
#: always give the same interval.
BOOTSTRAP_RESAMPLES = 1000
INTERVAL_LEVEL = 0.95
BOOTSTRAP_SEED = 0
INTERVAL_METRICS = ("bleu4", "cider", "rouge_l", "exact_match", "edit_rate")


class _PerImage:
    """Per-image pieces of every metric, so a resample of the images is scored without re-tokenizing."""

    def __init__(self, hypotheses: Sequence[str], references: Refs) -> None:
        self.n = len(hypotheses)
        self.bleu = _bleu_stats(hypotheses, references)
        self.means = {"cider": _cider_scores(hypotheses, references), "rouge_l": _rouge_scores(hypotheses, references),
                      "exact_match": _exact_scores(hypotheses, references),
                      "edit_rate": edit_rates(hypotheses, references)}

    def score(self, idx: Sequence[int]) -> dict[str, float]:
        out = {"bleu4": _bleu_from_stats(_sum_stats(self.bleu, idx))}
        for key, values in self.means.items():
            out[key] = sum(values[i] for i in idx) / len(idx)
        return out


def _resamples(n: int, seed: int, resamples: int) -> Iterator[list[int]]:
    import random

    rng = random.Random(seed)
    for _ in range(resamples):
        yield [rng.randrange(n) for _ in range(n)]


def _percentiles(values: list[float], level: float) -> list[float]:
    values = sorted(values)
    tail = (1.0 - level) / 2
    low = values[int(math.floor(tail * (len(values) - 1)))]
    high = values[int(math.ceil((1.0 - tail) * (len(values) - 1)))]
    return [round(low, 4), round(high, 4)]


def metric_intervals(hypotheses: Sequence[str], references: Refs, *, resamples: int = BOOTSTRAP_RESAMPLES,
                     level: float = INTERVAL_LEVEL, seed: int = BOOTSTRAP_SEED) -> dict[str, list[float]]:
    """A percentile-bootstrap interval over the images (``[low, high]``) for every metric.

    The images are resampled with replacement from a fixed seed, so the interval is
    deterministic.  CIDEr keeps the document frequencies of all the images (each image's
    score is resampled); BLEU-4 is recomputed as a corpus score from the resampled counts.
    Each interval is widened to contain the point estimate, which a skewed bootstrap can miss.
    """
    if not hypotheses:
        return {}
    per = _PerImage(hypotheses, references)
    everything = per.score(range(per.n))
    draws: dict[str, list[float]] = {k: [] for k in INTERVAL_METRICS}
    for idx in _resamples(per.n, seed, resamples):
        for key, value in per.score(idx).items():
            draws[key].append(value)
    out = {}
    for key in INTERVAL_METRICS:
        low, high = _percentiles(draws[key], level)
        point = round(everything[key], 4)
        out[key] = [min(low, point), max(high, point)]
    return out


def compare_to_base(base_hypotheses: Sequence[str], hypotheses: Sequence[str], references: Refs, *,
                    resamples: int = BOOTSTRAP_RESAMPLES, level: float = INTERVAL_LEVEL,
                    seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """Did the version beat its base by more than the noise of these images?

    A paired bootstrap of the selection score's difference (version minus base, CIDEr +
    BLEU-4) over the same resampled images; ``beats_base`` only when the whole interval
    lies above 0.  Returns ``{"metric", "difference", "interval", "level", "n", "beats_base"}``.
    """
    if len(base_hypotheses) != len(hypotheses):
        raise ValueError(f"{len(base_hypotheses)} base captions but {len(hypotheses)} version captions")
    if not hypotheses:
        return {"metric": "cider+bleu4", "difference": None, "interval": None, "level": level, "n": 0,
                "beats_base": False}
    base, new = _PerImage(base_hypotheses, references), _PerImage(hypotheses, references)

    def diff(idx: Sequence[int]) -> float:
        return selection_score(new.score(idx)) - selection_score(base.score(idx))

    point = diff(range(new.n))
    low, high = _percentiles([diff(idx) for idx in _resamples(new.n, seed, resamples)], level)
    point = round(point, 4)
    low, high = min(low, point), max(high, point)
    return {"metric": "cider+bleu4", "difference": point, "interval": [low, high], "level": level, "n": new.n,
            "beats_base": low > 0}


def comparison_sentence(comparison: dict[str, Any], where: str = "validation") -> str:
    """The comparison in one plain sentence (CLI and window say the same)."""
    if not comparison or comparison.get("difference") is None:
        return f"there were no {where} photos to compare the new version with the base model"
    d, (low, high), n = comparison["difference"], comparison["interval"], comparison["n"]
    numbers = (f"CIDEr+BLEU-4 {d:+.3f} vs the base, {comparison['level']:.0%} interval [{low:+.3f}, {high:+.3f}] "
               f"over {n} {where} photos")
    if comparison["beats_base"]:
        return f"the new version beats the base model ({numbers})"
    return (f"the new version did not beat the base model by more than the noise of its {where} photos "
            f"({numbers}); keep using the current model")


def kept_epoch_note(best_epoch: int, epochs_run: int, lr: float | None, beats_base: bool) -> str | None:
    """Why a run kept its first epoch of several, and what to try (None: it kept a later one)."""
    if best_epoch != 1 or epochs_run < 2 or lr is None:
        return None
    why = f"kept epoch 1 of {epochs_run}: later epochs scored lower on the validation photos; "
    if beats_base:
        return why + f"the learning rate {lr:g} may be too high for this data (it overfits) - try --lr {lr / 3:.2g}"
    return why + (f"the first epoch did not beat the base either, so the learning rate {lr:g} may be too low for "
                  f"this data - try --lr {lr * 10:.2g}")
