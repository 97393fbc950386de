"""CPU speed of the captioning model layer vs the naive per-image loop (BLIP-base architecture).

Measured 2026-11-23 on the 2-core build box (no GPU), torch 2.13.0+cpu, transformers 5.23.0,
BLIP-base shapes with random weights, 384 px, 8 images (640x480), batch 8, exactly 20 generated
tokens, paths interleaved, best repeat kept.

``python benchmarks/caption_model_speed.py --repeats 3`` (2 threads, the default)::

    path                                img/s  vs naive  cpu s/img  cpu vs naive  same text
    naive per-image loop                0.413     1.00x       4.72         1.00x      8/8
    batch 8 fp32 (optimize=none)        0.501     1.21x       3.85         1.22x      8/8
    batch 8 + SDPA (optimize=sdpa)      0.655     1.59x       2.98         1.58x      8/8
    batch 8 + int8 (optimize=int8)      0.695     1.68x       2.76         1.71x      8/8
    combined (optimize=auto)            0.920     2.23x       1.94         2.43x      7/8

``python benchmarks/caption_model_speed.py --threads 1 --repeats 2`` (repeats agree within 10 %)::

    path                                img/s  vs naive  cpu s/img  cpu vs naive  same text
    naive per-image loop                0.331     1.00x       2.97         1.00x      8/8
    batch 8 fp32 (optimize=none)        0.372     1.12x       2.63         1.13x      8/8
    batch 8 + SDPA (optimize=sdpa)      0.457     1.38x       2.15         1.38x      8/8
    batch 8 + int8 (optimize=int8)      0.521     1.57x       1.89         1.58x      8/8
    combined (optimize=auto)            0.671     2.03x       1.47         2.02x      7/8

The box is shared with other jobs: with 2 threads single repeats ranged from
19 s to 133 s for the naive loop, so only the best of 3 interleaved repeats is
meaningful (an earlier 2-thread run gave 0.404 / 0.503 / 0.669 / 0.681 / 0.957
img/s, i.e. the same picture).  The 1-thread run is the stable one (wall time
= CPU time).  The ML stack notes' 3.1x was not reproduced: the naive loop
measured faster here (0.41 vs 0.33 img/s).  "same text": captions identical
to the batch-8 fp32 run.  Random weights give near-uniform next-token
distributions, so int8 flipping one of 8 here says little about quality;
``test_int8_path_stays_close_to_fp32`` checks that on a trained tiny model.

Since then (same day, later): the int8 paths use the rescored int8 LM head
(``core/captioning/lm_head.py``), and the first ``load_captioner`` call of the
process turns on the CPU allocator tuning (``core/allocator.py``), which is
process-wide - so in this script *every* row, the naive loop's included, runs
with it, and the table above (taken before both) is out of date.  The
end-to-end comparison against a naive loop in a process of its own, as a
tutorial script would run it, is ``benchmarks/caption_throughput.py``.

What is timed:

* naive: for each image, ``processor(images=im)`` -> ``model.generate`` ->
  ``decode``, plain ``BlipForConditionalGeneration`` in fp32;
* the others: ``Captioner.preprocess`` + ``Captioner.generate`` of
  :func:`core.captioning.load_captioner` on the saved folder, in batches of
  ``--batch-size``, with the given ``optimize`` value.

The random-weight model (~900 MB) is saved once to ``.bench-cache/`` (git
ignored) and reused.  Usage::

    python benchmarks/caption_model_speed.py [--images 8] [--batch-size 8] [--repeats 2] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TOKENS = 20
IMAGE_SIZE = 384
#: Same vocabulary size as Salesforce/blip-image-captioning-base, so the LM head costs the same.
VOCAB_SIZE = 30524


def build_model(folder: Path) -> Path:
    """Save a random-weight BLIP-base (the real checkpoint's shapes) unless already there."""
    if (folder / "model.safetensors").is_file():
        return folder
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipProcessor,
    )
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    print(f"building random-weight BLIP-base in {folder} (once) ...", flush=True)
    torch.manual_seed(0)
    words = ["a", "the", "of", "on", "with", "dog", "cat", "photo", "beach", "tree", "red", "blue"]
    # BertTokenizer(vocab_file=...) is ignored in transformers 5.x: pass the dict.
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])})
    tok.add_special_tokens({"bos_token": "[DEC]"})
    config = BlipConfig()
    # BlipConfig's vision default initializer_range is 1e-10: image features would be ~0.
    config.vision_config.initializer_range = 0.02
    config.vision_config.image_size = IMAGE_SIZE
    text = config.text_config
    text.vocab_size = VOCAB_SIZE
    # Token ids only need to be < vocab size; generation is forced to 20 tokens anyway.
    text.bos_token_id = tok.bos_token_id
    text.sep_token_id = text.eos_token_id = tok.sep_token_id
    text.pad_token_id = tok.pad_token_id
    model = BlipForConditionalGeneration(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
                  tokenizer=tok).save_pretrained(folder)
    return folder


def make_images(n: int) -> list:
    """``n`` different 640x480 RGB images (noise + gradients; content does not matter for speed)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for i in range(n):
        base = np.linspace(0, 255, 640, dtype=np.float32)[None, :, None] * np.ones((480, 1, 3), np.float32)
        noise = rng.normal(0, 40, (480, 640, 3))
        tint = np.array([(i * 37) % 255, (i * 91) % 255, (i * 53) % 255], np.float32)
        images.append(Image.fromarray(np.clip(0.5 * base + 0.5 * tint + noise, 0, 255).astype(np.uint8), "RGB"))
    return images


def naive_runner(folder: Path, images: list) -> Callable[[], list[str]]:
    import torch
    from transformers import BlipForConditionalGeneration, BlipProcessor

    processor = BlipProcessor.from_pretrained(folder)
    model = BlipForConditionalGeneration.from_pretrained(folder).eval()

    def run() -> list[str]:
        texts = []
        with torch.inference_mode():
            for image in images:
                inputs = processor(images=image, return_tensors="pt")
                out = model.generate(**inputs, max_new_tokens=TOKENS, min_new_tokens=TOKENS)
                texts.append(processor.decode(out[0], skip_special_tokens=True).strip())
        return texts

    return run


def captioner_runner(folder: Path, images: list, optimize: str, batch_size: int) -> Callable[[], list[str]]:
    from core.captioning import GenerationSettings, load_captioner

    captioner = load_captioner(folder, device="cpu", optimize=optimize)
    settings = GenerationSettings(min_new_tokens=TOKENS, max_new_tokens=TOKENS)

    def run() -> list[str]:
        texts = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            texts.extend(r.text for r in captioner.generate(captioner.preprocess(chunk, settings), settings))
        return texts

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=8, help="number of images (default 8)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size of the captioner paths (default 8)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the best is kept (default 2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice, one per core)")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".bench-cache" / "blip-base-random-384",
                        help="where the random-weight model is saved")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = build_model(args.cache_dir)
    images = make_images(args.images)
    b = args.batch_size
    paths: list[tuple[str, Callable[[], Callable[[], list[str]]]]] = [
        ("naive per-image loop", lambda: naive_runner(folder, images)),
        (f"batch {b} fp32 (optimize=none)", lambda: captioner_runner(folder, images, "none", b)),
        (f"batch {b} + SDPA (optimize=sdpa)", lambda: captioner_runner(folder, images, "sdpa", b)),
        (f"batch {b} + int8 (optimize=int8)", lambda: captioner_runner(folder, images, "int8", b)),
        ("combined (optimize=auto)", lambda: captioner_runner(folder, images, "auto", b)),
    ]
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, {args.images} images, {TOKENS} tokens, {IMAGE_SIZE} px",
          flush=True)
    runners = [(name, make()) for name, make in paths]
    best: dict[str, float] = {}
    best_cpu: dict[str, float] = {}
    texts: dict[str, list[str]] = {}
    for repeat in range(args.repeats):
        # Interleaved, so a noisy neighbour slows all paths alike.
        for name, run in runners:
            started, cpu_started = time.perf_counter(), time.process_time()
            texts[name] = run()
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            best[name] = min(best.get(name, float("inf")), elapsed)
            best_cpu[name] = min(best_cpu.get(name, float("inf")), cpu)
            print(f"  repeat {repeat + 1}: {name:<34} {elapsed:7.1f} s wall {cpu:7.1f} s cpu", flush=True)

    reference = texts[runners[1][0]]
    naive_rate = args.images / best[runners[0][0]]
    naive_cpu = best_cpu[runners[0][0]]
    print(f"\n{'path':<34} {'img/s':>6} {'vs naive':>9} {'cpu s/img':>10} {'cpu vs naive':>13} {'same text':>10}")
    for name, _ in runners:
        rate = args.images / best[name]
        same = sum(a == r for a, r in zip(texts[name], reference, strict=True))
        print(f"{name:<34} {rate:6.3f} {rate / naive_rate:8.2f}x {best_cpu[name] / args.images:10.2f} "
              f"{naive_cpu / best_cpu[name]:12.2f}x {same:>6}/{len(reference)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
