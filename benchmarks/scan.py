"""Scan speed on a synthetic 100k-photo library.

Generates (once, cached under ``.bench-cache/``) N small JPEG files in folders of 1000,
then measures in one run:

* baseline: a bare ``os.walk`` + ``stat`` of the tree — the floor any scanner pays;
* first full scan into a fresh library (fingerprint + header probe + DB insert);
* a no-change re-scan (one ``stat`` per file);

and prints the times, files/s and the ratio of each to the baseline.
Targets on the 2-core dev machine: first scan of 100k files < 20 s, re-scan < 3 s.

    python benchmarks/scan.py            # 100 000 files
    python benchmarks/scan.py --files 20000
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from core.library import Library  # noqa: E402

CACHE = Path(__file__).resolve().parents[1] / ".bench-cache"


def make_tree(count: int) -> Path:
    folder = CACHE / f"scan-{count}"
    marker = folder / ".complete"
    if marker.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    print(f"generating {count} image files in {folder} (once)...", flush=True)
    # A few hundred distinct JPEG payloads; each file also gets a unique trailer after
    # the JPEG end marker (decoders ignore it), so every fingerprint differs.
    payloads = []
    for i in range(256):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 48), (i, 255 - i, (i * 7) % 256)).save(buffer, "JPEG", quality=80)
        payloads.append(buffer.getvalue())
    for i in range(count):
        sub = folder / f"{i // 10000:02d}" / f"{(i // 1000) % 10}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"IMG_{i:06d}.jpg").write_bytes(payloads[i % 256] + i.to_bytes(4, "little"))
    marker.touch()
    return folder


def walk_baseline(folder: Path) -> tuple[float, int]:
    start = time.perf_counter()
    n = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            if name.startswith("."):
                continue  # the cache's own marker file, which the scanner skips too
            os.stat(os.path.join(dirpath, name))
            n += 1
    return time.perf_counter() - start, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    args = parser.parse_args()
    folder = make_tree(args.files)

    walk_baseline(folder)  # warm the page cache and dentry cache like a second visit
    baseline, n = walk_baseline(folder)
    with tempfile.TemporaryDirectory() as tmp:
        library = Library(Path(tmp) / "bench.db")
        root = library.add_root(folder)
        start = time.perf_counter()
        first_stats = library.scan([root.id])
        first = time.perf_counter() - start
        start = time.perf_counter()
        again_stats = library.scan([root.id])
        again = time.perf_counter() - start
        library.close()
    assert first_stats.new == n, first_stats
    assert again_stats.unchanged == n and again_stats.new == 0, again_stats

    print(f"files: {n}")
    print(f"{'run':<22}{'seconds':>10}{'files/s':>12}{'x walk+stat':>14}{'target':>10}")
    for label, seconds, target in (
        ("walk+stat baseline", baseline, None),
        ("first scan", first, 20.0 * n / 100_000),
        ("no-change re-scan", again, 3.0 * n / 100_000),
    ):
        verdict = "" if target is None else ("ok" if seconds < target else "MISSED")
        print(f"{label:<22}{seconds:>10.2f}{n / seconds:>12.0f}{seconds / baseline:>14.1f}{verdict:>10}")


if __name__ == "__main__":
    main()
