"""Which LoRA settings learn a restyle task: the measurement behind ``BlipFamily.lora_defaults``.

Scenario (tests/restyle_scenario.py): a tiny BLIP pre-trained on captions in style A
("a large red square on black") is retrained through ``core.training.train`` on 480
photos that a person captioned in style B ("the picture of a large square in red on
black"), 32 distinct captions, 25 % held out by the library's split (354 / 126).  Each config runs
``--epochs`` epochs (no early stopping); the number is the best held-out exact match.

Usage::

    python benchmarks/lora_defaults.py --epochs 15 [--only NAME ...]

Prints one line per config: name, exact match at the best epoch, per-epoch exact match,
seconds.
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
from tests import restyle_scenario  # noqa: E402

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--only", nargs="*", default=None, help="config names (prefix match)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
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
