"""Which LoRA settings learn a restyle task: the measurement behind ``BlipFamily.lora_defaults``.

Scenario (tests/support/restyle_scenario.py): a tiny BLIP pre-trained on captions in style A
("a large red square on black") is retrained through ``core.training.train`` on 480
photos that a person captioned in style B ("the picture of a large square in red on
black"), 32 distinct captions, 25 % held out by the library's split (354 / 126).  Each config runs
``--epochs`` epochs (no early stopping); the number is the best held-out exact match.

Usage::

    python benchmarks/lora_defaults.py --epochs 15 [--only NAME ...]

Prints one line per config: name, exact match at the best epoch, per-epoch exact match,
seconds.

The vision-language families (``--family llava|qwen2_vl|idefics3|paligemma|florence2``) use
the coloured-squares scenario of tests/core/training/test_training_vlm_families.py: the tiny random model
(tests/support/tiny_models.py) is first fully fine-tuned through ``core.training.train`` on a library
captioned in style A (``"a red square"``), then LoRA-restyled to style B (``"the picture of a
square in red"``) for every combination of ``--ranks`` x ``--targets`` x ``--lrs``::

    OMP_NUM_THREADS=1 python benchmarks/lora_defaults.py --family llava --threads 1 --epochs 3 \
        --ranks 16 --targets attn+mlp --lrs 1e-3 3e-3 1e-2 3e-2 [--hidden 64]

``--hidden`` (LLaVA only) sets the language model's width, to see how the best lr moves
with width.  Targets: ``attn`` (the language model's attention projections), ``attn+mlp``
(+ its feed-forward layers), ``all-linear`` (every linear layer but the LM head and the
frozen vision tower: language model + projector), ``defaults`` (whatever the family's
``lora_defaults`` give, lr included unless ``--lrs`` is given).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from core.training import TrainingConfig, train  # noqa: E402
from tests.support import restyle_scenario  # noqa: E402

QV = ["query", "value"]
ATTN_FFN = ["query", "key", "value", "dense"]
CONFIGS: dict[str, dict] = {
    "r8-qv-1e-4 (old default)": {"lora_r": 8, "lora_alpha": 32, "target_modules": QV, "lr": 1e-4},
    "r8-qv-1e-3": {"lora_r": 8, "lora_alpha": 32, "target_modules": QV, "lr": 1e-3},
    "r32-qv-1e-3": {"lora_r": 32, "lora_alpha": 32, "target_modules": QV, "lr": 1e-3},
    "r16-attn+ffn-1e-3": {"lora_r": 16, "lora_alpha": 32, "target_modules": ATTN_FFN, "lr": 1e-3},
    "r16-attn+ffn-3e-3": {"lora_r": 16, "lora_alpha": 32, "target_modules": ATTN_FFN, "lr": 3e-3},
    "r8-attn+ffn-3e-3": {"lora_r": 8, "lora_alpha": 16, "target_modules": ATTN_FFN, "lr": 3e-3},
    "r16-attn+ffn-2e-3": {"lora_r": 16, "lora_alpha": 32, "target_modules": ATTN_FFN, "lr": 2e-3},
    "r8-all-linear-3e-3": {"lora_r": 8, "lora_alpha": 16, "target_modules": "all-linear", "lr": 3e-3},
    "r16-all-linear-3e-3": {"lora_r": 16, "lora_alpha": 32, "target_modules": "all-linear", "lr": 3e-3},
    "r16-all-linear-1e-2": {"lora_r": 16, "lora_alpha": 32, "target_modules": "all-linear", "lr": 1e-2},
    "r32-all-linear-3e-3": {"lora_r": 32, "lora_alpha": 64, "target_modules": "all-linear", "lr": 3e-3},
    "defaults (family)": {},
    "full-3e-3": {"method": "full", "lr": 3e-3},
}


#: ``--family`` name -> (registry family id, tiny model builder name in tests/support/tiny_models.py).
VLM_FAMILIES = {"llava": ("llava", "build_tiny_llava"), "qwen2_vl": ("qwen2-vl", "build_tiny_qwen2_vl"),
                "idefics3": ("idefics3", "build_tiny_idefics3"), "paligemma": ("paligemma", "build_tiny_paligemma"),
                "florence2": ("florence2", "build_tiny_florence2")}
#: Attention projections of the language models (Llama/Qwen2/Gemma; BART for Florence-2).
ATTENTION = {"florence2": ("q_proj", "k_proj", "v_proj", "out_proj")}
DEFAULT_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


def vlm_targets(family: object, key: str, which: str) -> list[str] | str | None:
    """``target_modules`` for *which* (``attn``, ``attn+mlp``, ``all-linear``, ``defaults``)."""
    if which == "defaults":
        return None
    if which == "all-linear":
        return "all-linear"
    names = family.lora_text_targets if which == "attn+mlp" else ATTENTION.get(key, DEFAULT_ATTENTION)
    return rf".*{family.language_model_path}\..*\.({'|'.join(names)})"


def vlm_sweep(args: argparse.Namespace) -> int:
    """Pre-train the tiny VLM on style A (full fine-tuning), then LoRA-restyle it to style B per config."""
    from core.captioning.families import get_family
    from tests.support import tiny_models
    from tests.support.training_scenario import STYLE_A, STYLE_B, label, squares_library

    family_id, builder = VLM_FAMILIES[args.family]
    family = get_family(family_id)
    build = getattr(tiny_models, builder)
    fast = {"batch_size": 16, "val_ratio": 0.25, "max_new_tokens": 12, "device": "cpu", "patience": 0}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        base = build(Path(tmp) / "tiny", **({"hidden_size": args.hidden} if args.hidden else {}))
        library = squares_library(Path(tmp) / "lib", args.images)
        try:
            label(library, STYLE_A)
            torch.manual_seed(0)
            pre = train(library, str(base), "style-a", TrainingConfig(method="full", lr=args.pretrain_lr,
                                                                      epochs=args.pretrain_epochs, **fast))
            print(json.dumps({"pretrained": args.family, "hidden": args.hidden or "fixture",
                              "exact_match": round(pre.metrics["exact_match"], 3),
                              "seconds": round(time.monotonic() - t0)}), flush=True)
            label(library, STYLE_B)
            lrs = args.lrs or [None]
            for i, (r, which, lr) in enumerate((r, t, lr) for r in args.ranks for t in args.targets for lr in lrs):
                t0 = time.monotonic()
                torch.manual_seed(0)
                # "defaults": the family's rank, alpha, dropout and targets (--ranks does not apply).
                lora = {} if which == "defaults" else {"lora_r": r, "lora_alpha": 2 * r, "lora_dropout": 0.0}
                config = TrainingConfig(method="lora", **lora, target_modules=vlm_targets(family, args.family, which),
                                        lr=lr, epochs=args.epochs, **fast)
                result = train(library, "style-a", f"run{i}", config)
                print(json.dumps({"family": args.family, "hidden": args.hidden or "fixture",
                                  "r": result_config(library, f"run{i}", "lora_r"), "targets": which,
                                  "lr": result_config(library, f"run{i}", "lr"),
                                  "exact_match": round(result.metrics["exact_match"], 3),
                                  "per_epoch": [round(h["exact_match"], 2) for h in result.history],
                                  "loss": [None if h["loss"] is None else round(h["loss"], 3) for h in result.history],
                                  "trainable": result.trainable_parameters,
                                  "seconds": round(time.monotonic() - t0)}), flush=True)
        finally:
            library.close()
    return 0


def result_config(library: object, name: str, key: str) -> object:
    """A setting as the run resolved it (family defaults filled in)."""
    from core.training import versions

    return versions.get_version(library, name).config[key]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=["blip", *VLM_FAMILIES], default="blip")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--only", nargs="*", default=None, help="BLIP: config names (prefix match)")
    parser.add_argument("--threads", type=int, default=2)
    vlm = parser.add_argument_group("vision-language families")
    vlm.add_argument("--ranks", type=int, nargs="+", default=[16], help="LoRA ranks (alpha = 2 x rank, no dropout)")
    vlm.add_argument("--targets", nargs="+", default=["attn+mlp"],
                     choices=["attn", "attn+mlp", "all-linear", "defaults"])
    vlm.add_argument("--lrs", type=float, nargs="+", default=None, help="default: the family's default lr")
    vlm.add_argument("--hidden", type=int, default=None, help="LLaVA: language model width (fixture: 32)")
    vlm.add_argument("--images", type=int, default=192)
    vlm.add_argument("--pretrain-epochs", type=int, default=12)
    vlm.add_argument("--pretrain-lr", type=float, default=1e-2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.hidden and args.family != "llava":
        parser.error("--hidden: only the tiny LLaVA has a width knob")
    if args.family != "blip":
        return vlm_sweep(args)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        base = restyle_scenario.pretrain_style_a(Path(tmp) / "style-a")
        print(f"pre-trained style A in {time.monotonic() - t0:.0f} s", flush=True)
        library, _ = restyle_scenario.restyle_library(Path(tmp) / "lib")
        try:
            for i, (name, cfg) in enumerate(CONFIGS.items()):
                if args.only and not any(name.startswith(o) for o in args.only):
                    continue
                t0 = time.monotonic()
                config = TrainingConfig(**{"method": "lora", **cfg}, epochs=args.epochs, patience=0,
                                        val_ratio=0.25, device="cpu")
                result = train(library, str(base), f"run{i}", config)
                per_epoch = [round(h["exact_match"], 2) for h in result.history]
                print(json.dumps({"config": name, "exact_match": round(result.metrics["exact_match"], 3),
                                  "per_epoch": per_epoch, "train": result.train_size,
                                  "validation": result.validation_size,
                                  "seconds": round(time.monotonic() - t0)}), flush=True)
        finally:
            library.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
