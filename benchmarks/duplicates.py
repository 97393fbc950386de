"""Grouping near-duplicates: the 8-band index against comparing every pair, in the same run.

Random 128-bit hash pairs (as :mod:`core.perceptual_hash` stores them) with 1 % planted
near-duplicates (up to 20 of the 128 bits flipped) are grouped by
:func:`core.perceptual_hash.close_pairs` and by a brute-force numpy comparison of every
pair (in blocks); both must find the same pairs.  Prints the seconds of each and the
ratio, for each size, and the hashing rate of small photos through the one decoder.

    python benchmarks/duplicates.py                    # 5,000 / 20,000 / 100,000 hashes
    python benchmarks/duplicates.py --sizes 20000 --brute-max 20000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.perceptual_hash import MAX_DISTANCE, close_pairs, hashes_of_file  # noqa: E402


def planted(n: int, rng: np.random.Generator) -> np.ndarray:
    codes = rng.integers(-(2**63), 2**63 - 1, (n, 2), dtype=np.int64).view(np.uint64)
    copies = max(1, n // 100)
    for i in range(copies):
        target, source = n - 1 - i, i
        codes[target] = codes[source]
        for bit in rng.choice(128, int(rng.integers(0, 21)), replace=False):
            codes[target, bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
    return codes.view(np.int64)


def brute_force(codes: np.ndarray, block: int = 2048) -> set[tuple[int, int]]:
    u = codes.view(np.uint64)
    found: set[tuple[int, int]] = set()
    for lo in range(0, len(u), block):
        d = np.bitwise_count(u[lo : lo + block, None, :] ^ u[None, :, :]).sum(axis=2)
        a, b = np.nonzero(d <= MAX_DISTANCE)
        found.update((int(x) + lo, int(y)) for x, y in zip(a, b, strict=True) if x + lo < y)
    return found


def hashing_rate(count: int = 200) -> float:
    from tests.support.imagegen import photo_image

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for n in range(count):
            paths.append(Path(tmp) / f"{n}.jpg")
            photo_image(n, size=(1024, 768)).save(paths[-1], quality=90)
        start = time.perf_counter()
        for path in paths:
            hashes_of_file(path)
        return count / (time.perf_counter() - start)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 100000])
    parser.add_argument("--brute-max", type=int, default=20000, help="largest size also compared pair by pair")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"{'hashes':>8} {'index s':>8} {'all pairs s':>12} {'ratio':>7} {'pairs':>6}")
    for n in args.sizes:
        codes = planted(n, rng)
        start = time.perf_counter()
        pairs = {(int(a), int(b)) for a, b in close_pairs(codes)}
        indexed = time.perf_counter() - start
        if n <= args.brute_max:
            start = time.perf_counter()
            brute = brute_force(codes)
            full = time.perf_counter() - start
            assert pairs == brute, "the index must find exactly the pairs a full comparison finds"
            print(f"{n:>8} {indexed:>8.2f} {full:>12.2f} {full / indexed:>6.1f}x {len(pairs):>6}")
        else:
            print(f"{n:>8} {indexed:>8.2f} {'-':>12} {'-':>7} {len(pairs):>6}")
    print(f"hashing 1024x768 JPEGs through core.imaging: {hashing_rate():.0f} photos/s (one core)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
