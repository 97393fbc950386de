"""Per-photo costs of the stages around the model: decode, scan, metadata write-back.

Measures, on this machine, what one photo costs outside the model itself:

* **decode for the model** (``core.imaging.load_model_input``, JPEG draft mode at the
  model's input scale, what the captioning engine runs) against a full decode
  (``core.imaging.load_rgb`` without a size), for a 24 MP, 12 MP, 3 MP and 0.3 MP JPEG,
  plus the BLIP image processor (resize + normalise to 384 px) on the decoded image;
* **scan of a new file** (fingerprint + split key + header probe + insert): a library
  scan of N copies of a 12 MP JPEG (each made unique by a trailer byte);
* **metadata write-back** per file: the ``write-metadata`` job (``core.metadata.write_metadata``:
  XMP + IPTC + EXIF into the file through a temporary file, fsync and rename, image data
  compared before the rename, the record's fingerprint updated) against the same job
  with ``sidecar=True`` (an ``.xmp`` beside each photo).

Photos are synthetic (gradients + noise, JPEG quality 90: they compress like photos,
12 MP = ~3 MB), generated once under ``.bench-cache/stages/``.

    python benchmarks/photo_stages.py                 # 200 copies for scan/metadata
    python benchmarks/photo_stages.py --copies 50 --skip-processor
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.imaging import load_model_input, load_rgb  # noqa: E402

CACHE = Path(__file__).resolve().parents[1] / ".bench-cache" / "stages"
SIZES = {"24 MP (6000x4000)": (6000, 4000), "12 MP (4000x3000)": (4000, 3000),
         "3 MP (2000x1500)": (2000, 1500), "0.3 MP (640x480)": (640, 480)}
#: BLIP's input side; the engine drafts JPEGs to 0.85 of it (core.imaging.DRAFT_FRACTION).
MODEL_SIDE = 384


def make_photo(size: tuple[int, int]) -> Path:
    import numpy as np
    from PIL import Image

    path = CACHE / f"photo-{size[0]}x{size[1]}.jpg"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    # Same recipe as benchmarks/caption_throughput.py: smooth gradients plus noise.
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    base = np.stack([x % 256, (y * 2 + 40) % 256, ((x + y) // 3) % 256], axis=-1)
    noise = rng.integers(0, 24, base.shape)
    tmp = path.with_suffix(".tmp")
    Image.fromarray((base + noise).clip(0, 255).astype(np.uint8)).save(tmp, "JPEG", quality=90)
    tmp.replace(path)
    return path


def median_seconds(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def decode_table(runs: int, processor: Any | None) -> None:
    print(f"{'photo':<20}{'file MB':>8}{'full decode':>13}{'model decode':>14}{'speed-up':>10}"
          f"{'+ processor':>13}{'decoded to':>12}")
    for label, size in SIZES.items():
        path = make_photo(size)
        full = median_seconds(lambda: load_rgb(path), runs)
        draft = median_seconds(lambda: load_model_input(path, MODEL_SIDE), runs)
        image = load_model_input(path, MODEL_SIDE)
        proc = median_seconds(lambda: processor(images=[image], return_tensors="pt"), runs) if processor else None
        proc_text = f"{(draft + proc) * 1000:>10.1f} ms" if proc is not None else f"{'-':>13}"
        print(f"{label:<20}{path.stat().st_size / 1e6:>8.1f}{full * 1000:>10.1f} ms{draft * 1000:>11.1f} ms"
              f"{full / draft:>9.1f}x{proc_text}{f'{image.width}x{image.height}':>12}")


def file_stages(copies: int) -> None:
    from core.captions import add_model_caption
    from core.library import Library
    from core.metadata import write_metadata

    source = make_photo(SIZES["12 MP (4000x3000)"])
    data = source.read_bytes()
    with tempfile.TemporaryDirectory(prefix="cd-stages-", dir=CACHE) as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        for i in range(copies):
            # A trailer after the JPEG end marker keeps every fingerprint distinct.
            (photos / f"IMG_{i:04d}.jpg").write_bytes(data + i.to_bytes(4, "little"))
        os.sync()
        library = Library(Path(tmp) / "stages.db")
        root = library.add_root(photos)
        start = time.perf_counter()
        stats = library.scan([root.id])
        scan_s = time.perf_counter() - start
        assert stats.new == copies, stats
        with library.db.write() as session:
            ids = [row[0] for row in session.execute(library_ids_sql())]
            for n, image_id in enumerate(ids):
                add_model_caption(session, image_id, f"a red car parked on a street number {n}",
                                  model_name="bench", score=-0.5)
        start = time.perf_counter()
        in_file = write_metadata(library)
        in_file_s = time.perf_counter() - start
        start = time.perf_counter()
        sidecar = write_metadata(library, sidecar=True)
        sidecar_s = time.perf_counter() - start
        library.close()
        shutil.rmtree(photos)
    assert in_file.written == copies and sidecar.sidecars == copies, (in_file, sidecar)
    mb = len(data) / 1e6
    print(f"\n{copies} copies of a {mb:.1f} MB 12 MP JPEG:")
    print(f"{'stage':<48}{'total s':>9}{'ms/file':>10}{'files/s':>9}")
    for label, seconds in (("scan, new files (fingerprint+probe+insert)", scan_s),
                           ("write-metadata in the file (XMP+IPTC+EXIF)", in_file_s),
                           ("write-metadata --sidecar (.xmp beside it)", sidecar_s)):
        print(f"{label:<48}{seconds:>9.2f}{seconds / copies * 1000:>10.1f}{copies / seconds:>9.1f}")


def library_ids_sql() -> Any:
    from sqlalchemy import text

    return text("SELECT id FROM images ORDER BY id")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=200, help="files for the scan and metadata stages")
    parser.add_argument("--runs", type=int, default=5, help="decodes per photo size (median)")
    parser.add_argument("--skip-processor", action="store_true", help="do not import transformers")
    args = parser.parse_args()
    started = time.perf_counter()
    processor = None
    if not args.skip_processor:
        from transformers import BlipImageProcessorPil

        processor = BlipImageProcessorPil(size={"height": MODEL_SIDE, "width": MODEL_SIDE})
    for size in SIZES.values():
        make_photo(size)
    decode_table(args.runs, processor)
    file_stages(args.copies)
    print(f"\n{os.cpu_count()} CPUs; benchmark took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
