"""End-to-end captioning throughput: the CaptionDesk engine vs the naive per-image loop.

Both run in the same process on the same JPEG files on disk (decode included), with the
BLIP-base architecture (random weights: the same compute as the real model, which the
offline machines cannot download), 384 px input, and a fixed 20-token greedy caption
(``min_new_tokens = max_new_tokens = 20``, so random weights cannot stop early).

* naive: what tutorials do — for each file ``Image.open().convert("RGB")``,
  ``processor(...)``, ``model.generate(...)``, ``batch_decode`` (fp32, eager attention);
* engine: ``run_caption_job`` on a library holding the same files — decode ahead in
  threads (JPEG draft mode), batches, the default ``optimize="auto"`` model path,
  commits with provenance.

    python benchmarks/caption_throughput.py                 # CPU
    python benchmarks/caption_throughput.py --device cuda   # on a GPU machine

Targets: >= 3x the naive loop on the 2-core CPU, >= 15x on a GPU.
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

CACHE = Path(__file__).resolve().parents[1] / ".bench-cache"
TOKENS = 20


def build_blip_base(folder: Path) -> Path:
    """Save a random-weight BLIP-base (same shapes as Salesforce/blip-image-captioning-base)."""
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    torch.manual_seed(0)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = [f"w{i}" for i in range(30522 - len(specials))]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(specials + words)})
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    processor = BlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": 384, "width": 384}), tokenizer=tokenizer
    )
    config = BlipConfig()
    config.text_config.vocab_size = 30524
    config.text_config.bos_token_id = tokenizer.bos_token_id
    model = BlipForConditionalGeneration(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def make_photos(count: int, size: tuple[int, int]) -> Path:
    import numpy as np
    from PIL import Image

    folder = CACHE / f"caption-photos-{count}-{size[0]}x{size[1]}"
    if (folder / ".complete").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        # Smooth gradients plus noise: compresses like a photo, not like flat colour.
        y, x = np.mgrid[0 : size[1], 0 : size[0]]
        base = np.stack([(x * (i + 1)) % 256, (y * 2 + i * 40) % 256, ((x + y) // 3) % 256], axis=-1)
        noise = rng.integers(0, 24, base.shape)
        Image.fromarray((base + noise).clip(0, 255).astype(np.uint8)).save(folder / f"IMG_{i:04d}.jpg", quality=90)
    (folder / ".complete").touch()
    return folder


def naive_loop(model_dir: Path, paths: list[Path], device: str) -> float:
    import torch
    from PIL import Image
    from transformers import BlipForConditionalGeneration, BlipProcessor

    processor = BlipProcessor.from_pretrained(model_dir)
    model = BlipForConditionalGeneration.from_pretrained(model_dir).to(device).eval()
    start = time.perf_counter()
    for path in paths:
        image = Image.open(path).convert("RGB")
        inputs = processor(images=image, return_tensors="pt").to(device)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=TOKENS, min_new_tokens=TOKENS)
        processor.batch_decode(out, skip_special_tokens=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    del model
    return len(paths) / elapsed


def engine_run(model_dir: Path, photos: Path, count: int, batch_size: int, device: str) -> tuple[float, float, int]:
    from PIL import Image

    from core.captioning import GenerationSettings, load_captioner
    from core.captioning.engine import CaptionJobSpec, run_caption_job
    from core.library import Library

    with tempfile.TemporaryDirectory() as tmp:
        library = Library(Path(tmp) / "bench.db")
        library.scan([library.add_root(photos).id])
        load_start = time.perf_counter()
        captioner = load_captioner(str(model_dir), device=device)
        load_seconds = time.perf_counter() - load_start
        settings = GenerationSettings(min_new_tokens=TOKENS, max_new_tokens=TOKENS)
        spec = CaptionJobSpec(model=str(model_dir), settings=settings, batch_size=batch_size, device=device)
        # Warm-up batch (first-call allocations, kernel selection), not counted.
        captioner.caption([Image.new("RGB", (384, 384))] * batch_size, settings)
        start = time.perf_counter()
        stats = run_caption_job(library, spec, captioner=captioner)
        elapsed = time.perf_counter() - start
        captioner.close()
        library.close()
    assert stats.captioned == count and stats.errors == 0, stats
    return stats.captioned / elapsed, load_seconds, stats.final_batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32, help="images for the engine run")
    parser.add_argument("--naive-images", type=int, default=8, help="images for the (slow) naive loop")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--photo-size", default="2000x1500", help="WxH of the generated JPEGs")
    args = parser.parse_args()

    import torch

    size = tuple(int(v) for v in args.photo_size.split("x"))
    model_dir = build_blip_base(CACHE / "blip-base-random")
    photos = make_photos(args.images, size)  # type: ignore[arg-type]
    paths = sorted(photos.glob("*.jpg"))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    print(f"{len(paths)} JPEGs of {args.photo_size}, BLIP-base (random weights), {TOKENS} tokens greedy")

    naive = naive_loop(model_dir, paths[: args.naive_images], args.device)
    engine, load_seconds, final_batch = engine_run(model_dir, photos, len(paths), args.batch_size, args.device)
    target = 15.0 if args.device.startswith("cuda") else 3.0
    print(f"{'path':<40}{'img/s':>10}{'x naive':>10}")
    print(f"{'naive per-image loop':<40}{naive:>10.3f}{1.0:>10.2f}")
    label = f"engine (batch {args.batch_size}, optimize=auto)"
    print(f"{label:<40}{engine:>10.3f}{engine / naive:>10.2f}")
    print(f"model load + optimise: {load_seconds:.1f} s; final batch size {final_batch}")
    print(f"target >= {target:.0f}x: {'ok' if engine / naive >= target else 'MISSED'}")


if __name__ == "__main__":
    main()
