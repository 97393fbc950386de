"""GPU check: captioning images/s and peak memory for four model shapes, and a short QLoRA run.

For a machine with one CUDA GPU (``benchmarks/gpu_check.sh`` runs it; planned to take under
8 minutes on one H100).  Random weights of the real checkpoints' sizes, so nothing is
downloaded:

* blip-base: BLIP-base (``Salesforce/blip-image-captioning-base`` shapes, 384 px);
* florence2-base: Florence-2-base-shaped (DaViT-base + BART 6+6 x 768, 51k vocabulary);
* smolvlm-256m: SmolVLM-256M-shaped (SigLIP-B/16 12 x 768 + SmolLM2-135M: 30 x 576, 49k vocabulary;
  384 px, one tile: the real model uses 512 px tiles);
* qwen2-vl-2b: Qwen2-VL-2B-shaped (vision 32 x 1280 + Qwen2-1.5B: 28 x 1536, 152k vocabulary;
  at most 448x448 pixels per photo).

Per model: the naive loop (fp32, one photo at a time: processor -> generate -> decode), the
engine (``load_captioner(optimize="auto")``: bf16/fp16 + batching) at batch 1 and at the best
of the batch sizes tried (doubling until out of memory or the list ends), images/s and peak
GPU memory; then 50 QLoRA steps (4-bit base, LoRA on every linear layer) of the
SmolVLM-shaped model: s/step and peak memory.  ``--tiny`` runs the same code on the test
suite's tiny models on the CPU in seconds (LoRA without 4-bit: bitsandbytes' 4-bit training
needs CUDA here), to keep the script working where no GPU is lent.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODELS = ("blip-base", "florence2-base", "smolvlm-256m", "qwen2-vl-2b")


def build(name: str, cache: Path, tiny: bool) -> Path:
    from benchmarks import caption_model_speed as speed

    return speed.build_shaped(name, cache, tiny)


def timed(run: Callable[[], Any], device: str) -> float:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")


def caption_rows(name: str, folder: Path, args: argparse.Namespace) -> None:
    import torch

    from benchmarks import caption_model_speed as speed
    from core.captioning import GenerationSettings, load_captioner

    photos = speed.make_photos(args.images)
    speed.TOKENS = args.tokens
    reset_peak(args.device)
    if name == "blip-base":
        naive = speed.naive_runner(folder, photos, args.device)
    else:
        naive = speed.vlm_naive_runner(folder, photos, args.device)
    naive()  # warm-up (CUDA kernels, allocator)
    seconds = timed(naive, args.device)
    print(f"{name:<16} naive loop fp32   {args.images / seconds:8.2f} img/s  peak {peak_gib(args.device):6.2f} GiB",
          flush=True)
    del naive
    captioner = load_captioner(folder, device=args.device, optimize="auto")
    settings = GenerationSettings(min_new_tokens=args.tokens, max_new_tokens=args.tokens)
    best: tuple[float, int] = (0.0, 0)
    for batch in args.batches:
        images = (photos * (-(-batch // len(photos))))[: max(batch, len(photos))]

        def run(images: list = images, batch: int = batch) -> None:
            for start in range(0, len(images), batch):
                captioner.generate(captioner.preprocess(images[start : start + batch], settings), settings)

        reset_peak(args.device)
        try:
            run()  # warm-up
            seconds = timed(run, args.device)
        except torch.OutOfMemoryError:
            print(f"{name:<16} engine batch {batch:<4} out of memory", flush=True)
            break
        rate = len(images) / seconds
        best = max(best, (rate, batch))
        print(f"{name:<16} engine batch {batch:<4} {rate:8.2f} img/s  peak {peak_gib(args.device):6.2f} GiB "
              f"({', '.join(captioner.identity['optimizations']) or 'fp32'})", flush=True)
    print(f"{name:<16} best batch {best[1]}: {best[0]:.2f} img/s", flush=True)
    captioner.close()


def lora_run(folder: Path, args: argparse.Namespace) -> None:
    """``args.steps`` LoRA steps on a 4-bit base (CUDA) or an fp32 base (``--tiny``, CPU)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForImageTextToText,
        AutoProcessor,
        BitsAndBytesConfig,
    )

    from benchmarks import caption_model_speed as speed

    quantized = args.device.startswith("cuda")
    kwargs: dict[str, Any] = {}
    if quantized:
        kwargs = {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                            bnb_4bit_compute_dtype=torch.bfloat16),
                  "device_map": {"": args.device}}
    model = AutoModelForImageTextToText.from_pretrained(folder, **kwargs)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    model.to(args.device).train()
    processor = AutoProcessor.from_pretrained(folder)
    photos = speed.make_photos(args.lora_batch)
    text = [f"{processor.apply_chat_template([{'role': 'user', 'content': [{'type': 'image'}]}])}a photo" ] * len(photos)
    inputs = processor(images=[[p] for p in photos], text=text, return_tensors="pt", padding=True).to(args.device)
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    reset_peak(args.device)

    def steps() -> None:
        for _ in range(args.steps):
            loss = model(**inputs, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    seconds = timed(steps, args.device)
    what = "QLoRA (4-bit nf4)" if quantized else "LoRA fp32 (--tiny: no 4-bit on the CPU)"
    print(f"smolvlm-256m     {what}: {args.steps} steps, batch {args.lora_batch}, {seconds / args.steps:.3f} s/step, "
          f"peak {peak_gib(args.device):.2f} GiB", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the test suite's tiny models on the CPU, in seconds")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where the random-weight models are saved (default .bench-cache/gpu-check)")
    parser.add_argument("--skip-lora", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    if args.tiny:
        args.device, args.images, args.tokens, args.batches, args.steps, args.lora_batch = "cpu", 2, 3, [1, 2], 2, 2
        cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device; use --tiny for the CPU smoke run", file=sys.stderr)
            return 2
        args.device, args.images, args.tokens, args.batches, args.steps, args.lora_batch = (
            "cuda", 16, 20, [1, 8, 16, 32, 64], 50, 4)
        cache = args.cache_dir or REPO / ".bench-cache" / "gpu-check"
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    for name in args.models:
        caption_rows(name, build(name, cache, args.tiny), args)
    if not args.skip_lora:
        lora_run(build("smolvlm-256m", cache, args.tiny), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
