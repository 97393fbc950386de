"""End-to-end captioning throughput: the CaptionDesk engine vs the naive per-image loop.

Both caption the same JPEG files on disk (decode included), with the BLIP-base
architecture (random weights: the same compute as the real model, which the offline
machines cannot download), 384 px input, and a fixed 20-token greedy caption
(``min_new_tokens = max_new_tokens = 20``, so random weights cannot stop early).

* naive: what tutorials do - for each file ``Image.open().convert("RGB")``,
  ``processor(...)``, ``model.generate(...)``, ``batch_decode`` (fp32, eager attention),
  in a plain Python process of its own (default allocator settings, as a script has);
* engine: ``run_caption_job`` on a library holding the same files - JPEG draft decoding,
  batches, the default ``optimize="auto"`` model path (SDPA, int8, the rescored int8 LM
  head), the CPU allocator tuning of ``core.allocator``, commits with provenance.

The two take turns in ``--rounds`` rounds (naive on ``--naive-images`` files, then the
engine on ``--images`` files), and the ratio is taken over the summed times, so a change
in machine speed during the run (common on shared VMs) affects both sides alike.  Both
models are loaded and warmed up before the first round.

    python benchmarks/caption_throughput.py                 # CPU
    python benchmarks/caption_throughput.py --device cuda   # on a GPU machine

Targets: >= 3x the naive loop on the 2-core CPU, >= 15x on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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


def naive_worker(model_dir: Path, device: str, tuned_allocator: bool) -> None:
    """The naive loop as its own process: reads a JSON list of paths per line, answers seconds."""
    import torch
    from PIL import Image
    from transformers import BlipForConditionalGeneration, BlipProcessor

    if tuned_allocator:
        from core.allocator import keep_freed_memory

        keep_freed_memory()
    processor = BlipProcessor.from_pretrained(model_dir)
    model = BlipForConditionalGeneration.from_pretrained(model_dir).to(device).eval()

    def caption(path: str) -> None:
        image = Image.open(path).convert("RGB")
        inputs = processor(images=image, return_tensors="pt").to(device)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=TOKENS, min_new_tokens=TOKENS)
        processor.batch_decode(out, skip_special_tokens=True)

    print("ready", flush=True)
    for line in sys.stdin:
        paths = json.loads(line)
        start = time.perf_counter()
        for path in paths:
            caption(path)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        print(json.dumps(time.perf_counter() - start), flush=True)


class NaiveLoop:
    """Drives a :func:`naive_worker` process."""

    def __init__(self, model_dir: Path, device: str, warmup: Path, *, tuned_allocator: bool = False) -> None:
        command = [sys.executable, __file__, "--naive-worker", str(model_dir), "--device", device]
        if tuned_allocator:
            command.append("--tuned-allocator")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the naive worker did not start")
        self.run([warmup])

    def run(self, paths: list[Path]) -> float:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps([str(p) for p in paths]) + "\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


class EngineRunner:
    """The engine with one loaded captioner, captioning chosen images of one library."""

    def __init__(self, model_dir: Path, photos: Path, batch_size: int, device: str, runtime: str = "torch") -> None:
        from PIL import Image

        from core.captioning import GenerationSettings, load_captioner
        from core.library import Library

        self.tmp = tempfile.TemporaryDirectory()
        self.library = Library(Path(self.tmp.name) / "bench.db")
        self.library.scan([self.library.add_root(photos).id])
        load_start = time.perf_counter()
        self.captioner = load_captioner(str(model_dir), device=device, runtime=runtime)
        self.load_seconds = time.perf_counter() - load_start
        self.settings = GenerationSettings(min_new_tokens=TOKENS, max_new_tokens=TOKENS)
        self.model_dir, self.batch_size, self.device, self.runtime = model_dir, batch_size, device, runtime
        self.final_batch_size = batch_size
        # Warm-up batch (first-call allocations, kernel selection), not counted.
        self.captioner.caption([Image.new("RGB", (384, 384))] * batch_size, self.settings)

    def image_ids(self) -> list[int]:
        from core.queries import filtered_ids, resolve_folder

        with self.library.db.read() as session:
            folder = resolve_folder(session, self.library.roots()[0].path)
            return sorted(filtered_ids(session, folder.image_filter()))

    def run(self, image_ids: list[int], *, overwrite: bool = False) -> float:
        from core.captioning.engine import CaptionJobSpec, run_caption_job

        spec = CaptionJobSpec(model=str(self.model_dir), generation=self.settings, batch_size=self.batch_size,
                              device=self.device, runtime=self.runtime, scope=image_ids,
                              overwrite_model_captions=overwrite)
        start = time.perf_counter()
        stats = run_caption_job(self.library, spec, captioner=self.captioner)
        elapsed = time.perf_counter() - start
        assert stats.captioned == len(image_ids) and stats.errors == 0, stats
        self.final_batch_size = stats.final_batch_size
        return elapsed

    def close(self) -> None:
        self.captioner.close()
        self.library.close()
        self.tmp.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16, help="images for the engine per round")
    parser.add_argument("--naive-images", type=int, default=4, help="images for the (slow) naive loop per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runtime", default="torch", choices=["torch", "openvino", "openvino-int8", "auto"],
                        help="the engine's runtime (core/captioning/openvino_runtime.py)")
    parser.add_argument("--photo-size", default="2000x1500", help="WxH of the generated JPEGs")
    parser.add_argument("--tuned-naive", action="store_true",
                        help="also time the naive loop with the engine's allocator tuning (what that alone gives)")
    parser.add_argument("--naive-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tuned-allocator", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_worker is not None:
        naive_worker(args.naive_worker, args.device, args.tuned_allocator)
        return

    import torch

    size = tuple(int(v) for v in args.photo_size.split("x"))
    model_dir = build_blip_base(CACHE / "blip-base-random")
    count = args.images * args.rounds
    photos = make_photos(count, size)  # type: ignore[arg-type]
    paths = sorted(photos.glob("*.jpg"))[:count]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    print(f"{args.rounds} rounds of {args.naive_images} (naive) / {args.images} (engine) JPEGs of "
          f"{args.photo_size}, BLIP-base (random weights), {TOKENS} tokens greedy")

    naive = NaiveLoop(model_dir, args.device, paths[-1])
    tuned = NaiveLoop(model_dir, args.device, paths[-1], tuned_allocator=True) if args.tuned_naive else None
    engine = EngineRunner(model_dir, photos, args.batch_size, args.device, args.runtime)
    ids = engine.image_ids()[:count]
    naive_s = tuned_s = engine_s = 0.0
    for r in range(args.rounds):
        naive_paths = paths[r * args.naive_images:(r + 1) * args.naive_images] or paths[: args.naive_images]
        n = naive.run(naive_paths)
        t = tuned.run(naive_paths) if tuned is not None else 0.0
        e = engine.run(ids[r * args.images:(r + 1) * args.images])
        naive_s, tuned_s, engine_s = naive_s + n, tuned_s + t, engine_s + e
        naive_rate, engine_rate = len(naive_paths) / n, args.images / e
        print(f"round {r + 1}: naive {naive_rate:.3f} img/s, engine {engine_rate:.3f} img/s, "
              f"{engine_rate / naive_rate:.2f}x")
    naive.close()
    if tuned is not None:
        tuned.close()
    load_seconds, final_batch = engine.load_seconds, engine.final_batch_size
    engine.close()

    naive_rate = args.rounds * args.naive_images / naive_s
    engine_rate = args.rounds * args.images / engine_s
    target = 15.0 if args.device.startswith("cuda") else 3.0
    print(f"{'path':<44}{'img/s':>10}{'x naive':>10}")
    print(f"{'naive per-image loop':<44}{naive_rate:>10.3f}{1.0:>10.2f}")
    if tuned is not None:
        tuned_rate = args.rounds * args.naive_images / tuned_s
        print(f"{'naive loop + allocator tuning':<44}{tuned_rate:>10.3f}{tuned_rate / naive_rate:>10.2f}")
    label = f"engine (batch {args.batch_size}, optimize=auto, runtime={args.runtime})"
    print(f"{label:<44}{engine_rate:>10.3f}{engine_rate / naive_rate:>10.2f}")
    print(f"model load + optimise: {load_seconds:.1f} s; final batch size {final_batch}")
    print(f"target >= {target:.0f}x: {'ok' if engine_rate / naive_rate >= target else 'MISSED'}")


if __name__ == "__main__":
    main()
