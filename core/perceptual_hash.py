"""Perceptual hashes of photos and the groups of near-identical ones they reveal.

Each picture gets two 64-bit hashes of its upright grey-level image (decoded by
:mod:`core.imaging`, so EXIF rotation is applied): the DCT hash (*pHash*: the signs of
the 8 x 8 lowest DCT frequencies of a 32 x 32 copy against their median, bit-for-bit
``imagehash.phash``) and the gradient hash (*dHash*: is each of 8 x 8 pixels brighter
than its right neighbour, ``imagehash.dhash``).  Two photos are near-duplicates when
the two Hamming distances add up to at most :data:`MAX_DISTANCE` out of 128 bits and
their colours agree: both hashes see only grey levels, so a red and a green picture of
one layout would hash alike; the *colour signature* (the chromaticity, r and g over
r + g + b, of the picture's four quarters, one byte each, unchanged by a brightness
shift) must differ by at most :data:`MAX_COLOUR_DIFFERENCE` in every byte.

Grouping never compares every pair: the 128 bits are cut into eight 16-bit bands and
any two hashes within :data:`MAX_DISTANCE` (23) differ in at most two bits of one band
(pigeonhole: 8 x 3 > 23), so looking each band up with every 0-, 1- and 2-bit change
(137 variants) in a 65 536-slot table finds every such pair; only those candidates are
compared in full.  Groups are the connected components of the confirmed pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

#: Largest pHash + dHash Hamming distance (of 128 bits) for two photos to be near-duplicates:
#: the largest the 8-band, radius-2 index finds exactly (docs/optimization-notes.md, "Near-duplicates").
MAX_DISTANCE = 23
#: Largest difference (of 255) of one colour-signature byte between near-duplicates.
MAX_COLOUR_DIFFERENCE = 12
_BANDS = 8
_BAND_BITS = 16
_RADIUS = 2
#: Images looked up together (bounds the lookup arrays to a few MB).
_CHUNK = 8192

#: Confirms candidate pairs ``(a, b)`` of indices, e.g. by image-embedding similarity.
PairConfirmer = Callable[[Sequence[tuple[int, int]]], Sequence[bool]]


def _to_signed(value: int) -> int:
    """A 64-bit hash as SQLite's signed INTEGER."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _bits_to_int(bits: np.ndarray) -> int:
    value = 0
    for bit in bits.ravel():
        value = (value << 1) | int(bit)
    return value


@cache
def _dct_matrix(n: int = 32) -> np.ndarray:
    """The DCT-II matrix (unnormalised scale does not change a sign against the median)."""
    k = np.arange(n)[:, None]
    return np.cos(np.pi * k * (2 * np.arange(n)[None, :] + 1) / (2 * n))


def hashes_of_image(image: Any) -> tuple[int, int, int]:
    """``(phash, dhash, colour signature)`` of a PIL image, as signed 64-bit integers."""
    from PIL import Image

    grey = image.convert("L")
    small = np.asarray(grey.resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    dct = _dct_matrix() @ small @ _dct_matrix().T
    low = dct[:8, :8]
    phash = _bits_to_int(low > np.median(low))
    tiny = np.asarray(grey.resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    dhash = _bits_to_int(tiny[:, 1:] > tiny[:, :-1])
    quarters = np.asarray(image.convert("RGB").resize((2, 2), Image.Resampling.BOX), dtype=np.float64).reshape(4, 3)
    # +1 / +3 keep a black quarter's chromaticity defined (grey) instead of noise.
    chroma = np.rint((quarters[:, :2] + 1) / (quarters.sum(axis=1, keepdims=True) + 3) * 255).astype(np.uint8)
    colour = int.from_bytes(chroma.tobytes(), "big")
    return _to_signed(phash), _to_signed(dhash), _to_signed(colour)


def hashes_of_file(path: Path | str) -> tuple[int, int, int]:
    """``(phash, dhash, colour)`` of the photo at *path*, decoded upright by the one decoder;
    raises :class:`core.imaging.ImageDecodeError` for a file that does not decode."""
    from core.imaging import load_rgb

    return hashes_of_image(load_rgb(path, max_size=128))


def colour_difference(a: int, b: int) -> int:
    """Largest difference of one byte between two colour signatures (0..255)."""
    x, y = (np.frombuffer((v & ((1 << 64) - 1)).to_bytes(8, "big"), dtype=np.uint8).astype(np.int16) for v in (a, b))
    return int(np.abs(x - y).max())


def distance(a: Sequence[int], b: Sequence[int]) -> int:
    """pHash + dHash Hamming distance between two hash tuples (0..128; a colour signature is ignored)."""
    return sum(((x ^ y) & ((1 << 64) - 1)).bit_count() for x, y in zip(a[:2], b[:2], strict=True))


@cache
def _masks() -> np.ndarray:
    """Every 16-bit value with at most :data:`_RADIUS` bits set."""
    values = np.arange(1 << _BAND_BITS, dtype=np.uint32)
    return values[np.bitwise_count(values) <= _RADIUS].astype(np.uint16)


def _bands(codes: np.ndarray) -> list[np.ndarray]:
    """The eight 16-bit bands of the (n, 2) uint64 hash pairs."""
    return [((codes[:, col] >> np.uint64(shift)) & np.uint64(0xFFFF)).astype(np.uint16)
            for col in range(2) for shift in range(0, 64, _BAND_BITS)]


def close_pairs(hashes: Sequence[tuple[int, int]] | np.ndarray, max_distance: int = MAX_DISTANCE) -> np.ndarray:
    """``(k, 2)`` index pairs ``a < b`` whose hashes are within *max_distance* (at most 23)."""
    if max_distance > _BANDS * (_RADIUS + 1) - 1:
        raise ValueError(f"the band index finds distances up to {_BANDS * (_RADIUS + 1) - 1}, not {max_distance}")
    n = len(hashes)
    if n < 2:
        return np.empty((0, 2), dtype=np.int64)
    codes = np.array(hashes, dtype=np.int64).view(np.uint64).reshape(n, 2)
    found = []
    masks = _masks()
    for band in _bands(codes):
        counts = np.bincount(band, minlength=1 << _BAND_BITS)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        order = np.argsort(band, kind="stable")
        for lo in range(0, n, _CHUNK):
            # Every (image, variant) of this chunk at once: the band with each 0-2 bit change.
            own = band[lo : lo + _CHUNK, None]
            wanted = (own ^ masks[None, :]).ravel()
            # A pair in two buckets is found from both sides: look up only the larger
            # bucket value (and, within one bucket, keep a < b below).
            hits = np.where(wanted >= np.broadcast_to(own, (len(own), len(masks))).ravel(), counts[wanted], 0)
            slots = np.flatnonzero(hits)
            if not slots.size:
                continue
            per = hits[slots]
            a = np.repeat(slots // len(masks) + lo, per)
            # Positions start, start+1, ... of each variant's bucket in the sorted order.
            offsets = np.arange(per.sum()) - np.repeat(np.cumsum(per) - per, per)
            b = order[np.repeat(starts[wanted[slots]], per) + offsets]
            keep = (a < b) | (band[a] != band[b])
            a, b = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
            close = np.bitwise_count(codes[a] ^ codes[b]).sum(axis=1) <= max_distance
            found.append(np.stack([a[close], b[close]], axis=1))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.concatenate(found).astype(np.int64)
    return np.unique(pairs, axis=0) if len(pairs) else pairs


def group_indices(n: int, pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected components of size >= 2 over *n* items joined by *pairs*, each sorted,
    in order of their smallest index."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return [members for _, members in sorted(groups.items()) if len(members) > 1]


def near_duplicate_groups(hashes: Sequence[tuple[int, int, int]], *, confirm: PairConfirmer | None = None,
                          max_distance: int = MAX_DISTANCE) -> list[list[int]]:
    """Groups (lists of indices into *hashes*, ``(phash, dhash, colour)`` each) of
    near-duplicates; *confirm*, when given, drops candidate pairs it does not confirm."""
    if not hashes:
        return []
    # Equal hashes (exact copies, re-saves) join at once, so a thousand copies of one picture
    # never make a million candidate pairs; the index runs on the distinct hashes.
    distinct, inverse = np.unique(np.array(hashes, dtype=np.int64).reshape(-1, 3), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    first = np.full(len(distinct), -1, dtype=np.int64)
    joined = []
    for i, slot in enumerate(inverse):
        if first[slot] < 0:
            first[slot] = i
        else:
            joined.append((int(first[slot]), i))
    pairs = [(int(first[a]), int(first[b])) for a, b in close_pairs(distinct[:, :2], max_distance)
             if colour_difference(int(distinct[a, 2]), int(distinct[b, 2])) <= MAX_COLOUR_DIFFERENCE]
    if confirm is not None and pairs:
        pairs = [pair for pair, ok in zip(pairs, confirm(pairs), strict=True) if ok]
    return group_indices(len(hashes), joined + pairs)
