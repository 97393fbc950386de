"""LoRA training-step speed on CPU, BLIP-base architecture, with and without cached vision embeddings.

Random weights (``BlipForConditionalGeneration(BlipConfig())``, 384 px, BLIP-base sizes),
LoRA r 8 / alpha 32 on the text decoder's ``query``/``value`` (the CaptionDesk default),
batch 4, 20-token captions, AdamW.  Two modes, each in its own subprocess so peak RSS
(``ru_maxrss``) is per mode:

* ``uncached`` — the full forward: vision encoder (frozen, no_grad-free as in a plain
  ``model(pixel_values=...)`` call) + text decoder, every step;
* ``cached`` — what ``core.training.trainer`` does when the vision encoder is frozen:
  ``vision_model`` runs once per image beforehand (timed separately, per image), then
  each step runs only the text decoder with ``encoder_hidden_states``.

Usage::

    python benchmarks/train_step.py [--steps 3] [--threads 2]

Output of ``python benchmarks/train_step.py`` on the 2-core dev VM, 2026-11-23, torch 2.13
CPU, transformers 5.23, peft 0.21.2 (1 min 42 s in all; the VM was shared with other
test runs, load average ~3.5 on 2 cores, so absolute times are ~2-3x the quiet-machine
numbers in shared/ml-stack-notes.md — the ratio is the number to look at)::

     uncached: 18.57 s/step (0.054 steps/s), peak RSS 1.99 GB, 0.59M trainable
       cached: 1.44 s/step (0.695 steps/s), peak RSS 1.97 GB, 0.59M trainable, vision encode once 1.07 s/image
    speed-up from cached vision embeddings: 12.90x per step (batch 4, 384 px, 3 timed steps after 1 warm-up)

The one-off encode (~1 s per image here) is paid once per run instead of once per epoch.
Peak RSS is about the same because it is dominated by the 224M fp32 weights + AdamW
state of the LoRA parameters; caching N images costs N x 577 x 768 x 4 B = 1.7 MB each.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def run_mode(mode: str, steps: int, threads: int) -> dict[str, float]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import BlipConfig, BlipForConditionalGeneration

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(BlipConfig())
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, lora_dropout=0.1, target_modules=["query", "value"]))
    inner = model.base_model.model
    model.train()
    inner.vision_model.eval()
    batch = 4
    pixels = torch.randn(batch, 3, 384, 384)
    ids = torch.randint(1000, 20000, (batch, 20))
    ids[:, 0] = inner.config.text_config.bos_token_id
    mask = torch.ones_like(ids)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    encode_s = 0.0
    embeds = None
    if mode == "cached":
        t = time.perf_counter()
        with torch.no_grad():
            embeds = inner.vision_model(pixel_values=pixels).last_hidden_state
        encode_s = (time.perf_counter() - t) / batch

    def step() -> None:
        if embeds is None:
            loss = inner(pixel_values=pixels, input_ids=ids, attention_mask=mask, labels=ids).loss
        else:
            loss = inner.text_decoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=embeds,
                                      labels=ids, reduction="mean").loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        step()
    per_step = (time.perf_counter() - t) / steps
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"s_per_step": per_step, "steps_per_s": 1 / per_step, "peak_rss_gb": rss_gb,
            "encode_s_per_image": encode_s, "trainable": trainable}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mode", choices=["cached", "uncached"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.steps, args.threads)))
        return
    results = {}
    for mode in ("uncached", "cached"):
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--steps", str(args.steps),
                              "--threads", str(args.threads)], check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
        r = results[mode]
        extra = f", vision encode once {r['encode_s_per_image']:.2f} s/image" if mode == "cached" else ""
        print(f"{mode:>9}: {r['s_per_step']:.2f} s/step ({r['steps_per_s']:.3f} steps/s), "
              f"peak RSS {r['peak_rss_gb']:.2f} GB, {r['trainable'] / 1e6:.2f}M trainable{extra}")
    ratio = results["uncached"]["s_per_step"] / results["cached"]["s_per_step"]
    print(f"speed-up from cached vision embeddings: {ratio:.2f}x per step "
          f"(batch 4, 384 px, {args.steps} timed steps after 1 warm-up)")


if __name__ == "__main__":
    main()
