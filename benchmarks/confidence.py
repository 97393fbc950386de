"""Does a low confidence score point at wrong captions?  Old score vs new, LoRA and full fine-tuning.

Scenario (tests/support/restyle_scenario.py): a tiny BLIP pre-trained on style A is retrained
through ``core.training.train`` on photos a person captioned in style B, once with LoRA
(the family's default LoRA settings) and once fully fine-tuned.  A quarter of all photos
are deliberately hard (a faint, tiny shape whose colour is barely visible), so the
versions still get some captions wrong.  Each version then captions unseen test photos
through the engine (``run_caption_job``); a caption is wrong when it differs from the
true style-B caption.  For each score kind stored in the captions' provenance
(core/captioning/confidence.py) it prints:

* AUROC of "low score -> wrong caption" (1.0: every wrong caption scores below every
  right one; 0.5: no better than chance);
* the same AUROC on the clear photos alone (not hard): there the typical error is one
  wrong word, which a score dominated by the template words misses;
* the error rate of the lowest-scored 20 % vs the other 80 % (what a reviewer working
  the queue from the top sees).

Usage::

    python benchmarks/confidence.py [--epochs 12] [--train 480] [--test 480] [--hard 0.25] [--check-views 2,3] [--seed 1]

Each version captions the test photos once plainly and once per ``--check-views`` count
(``CaptionJobSpec.check_views``: each photo captioned again from shifted views; the
stored kind is then ``view_agreement``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from sqlalchemy import select  # noqa: E402

from core.captioning.confidence import SCORE_KINDS  # noqa: E402
from core.captioning.engine import run_caption_job  # noqa: E402
from core.captioning.job_spec import CaptionJobSpec  # noqa: E402
from core.models import Caption, Image  # noqa: E402
from core.training import TrainingConfig, train  # noqa: E402
from tests.support import restyle_scenario  # noqa: E402


def auroc_low_means_wrong(scores: list[float], wrong: list[bool]) -> float:
    """P(a wrong caption scores lower than a right one), ties counting half."""
    bad = [s for s, w in zip(scores, wrong, strict=True) if w]
    good = [s for s, w in zip(scores, wrong, strict=True) if not w]
    if not bad or not good:
        return float("nan")
    wins = sum((b < g) + 0.5 * (b == g) for b in bad for g in good)
    return wins / (len(bad) * len(good))


def error_rates(scores: list[float], wrong: list[bool], fraction: float = 0.2) -> tuple[float, float]:
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    k = max(1, round(fraction * len(order)))
    low, rest = order[:k], order[k:]
    return sum(wrong[i] for i in low) / len(low), sum(wrong[i] for i in rest) / max(1, len(rest))


def evaluate(library, version: str, truth: dict[str, tuple[str, bool]], views: int = 0) -> None:
    with library.db.read() as session:
        ids = list(session.scalars(select(Image.id).where(Image.rel_path.like("test/%"))))
    run_caption_job(library, CaptionJobSpec(model=version, scope=ids, device="cpu", optimize="none",
                                            overwrite_model_captions=True, check_views=views))
    with library.db.read() as session:
        rows = session.execute(select(Image.rel_path, Caption.text, Caption.score, Caption.provenance)
                               .join(Caption, Caption.image_id == Image.id)
                               .where(Image.id.in_(ids), Caption.is_current.is_(True))).all()
    wrong = [text != truth[path][0] for path, text, _, _ in rows]
    hard = [truth[r[0]][1] for r in rows]
    kind = rows[0][3].score_kind
    print(f"\n{version}{f' (views checked: {views})' if views else ''}: {len(rows)} test captions, {sum(wrong)} wrong ({sum(wrong) / len(rows):.0%}); "
          f"wrong among hard photos {sum(w for w, h in zip(wrong, hard) if h)}/{sum(hard)}, "
          f"among easy {sum(w for w, h in zip(wrong, hard) if not h)}/{len(hard) - sum(hard)}; "
          f"stored score_kind: {kind}")
    print(f"  {'score kind':24} {'AUROC':>6} {'clear':>6}   err lowest 20 %   err other 80 %")
    for k in SCORE_KINDS:
        values = [r[3].scores.get(k) for r in rows]
        if any(v is None for v in values):
            continue
        auc = auroc_low_means_wrong(values, wrong)
        clear = auroc_low_means_wrong([v for v, h in zip(values, hard, strict=True) if not h],
                                      [w for w, h in zip(wrong, hard, strict=True) if not h])
        low, rest = error_rates(values, wrong)
        mark = "  <- stored" if k == kind else ""
        print(f"  {k:24} {auc:6.3f} {clear:6.3f}   {low:15.0%}   {rest:14.0%}{mark}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--train", type=int, default=480)
    parser.add_argument("--test", type=int, default=480)
    parser.add_argument("--hard", type=float, default=0.25)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1, help="the photos' seed (another draw of the same task)")
    parser.add_argument("--check-views", type=lambda v: [int(x) for x in v.split(",") if x], default=[2, 3],
                        help="also caption with these numbers of shifted views checked (comma list; '' for none)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        base = restyle_scenario.pretrain_style_a(Path(tmp) / "style-a")
        library, truth = restyle_scenario.restyle_library(Path(tmp) / "lib", n=args.train, test_n=args.test,
                                                          hard_fraction=args.hard, seed=args.seed)
        try:
            runs = {"lora": TrainingConfig(method="lora", epochs=args.epochs, patience=0, val_ratio=0.25),
                    "full": TrainingConfig(method="full", lr=3e-3, epochs=args.epochs, patience=0, val_ratio=0.25)}
            for name, config in runs.items():
                result = train(library, str(base), name, config)
                print(f"trained {name}: held-out exact match {result.metrics['exact_match']:.2f} "
                      f"(best epoch {result.best_epoch}, {result.seconds:.0f} s)", flush=True)
            for name in runs:
                for views in [0, *args.check_views]:
                    evaluate(library, name, truth, views)
        finally:
            library.close()
    print(f"\n{time.monotonic() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
