"""Where the vectors live: the ``embeddings`` table of the library file, and a matrix in memory.

Vectors are float32 BLOBs in the same SQLite file as the images they describe, so they are
written and deleted in the same transactions (an image's rows go with it, FK cascade).
A query loads one ``(model, kind)`` set into a numpy matrix once and scores it with one
matrix product; the matrix is cached per library and reloaded when ``(count, max(id))``
of its rows changes (ids are AUTOINCREMENT, never reused).  ``benchmarks/search.py``
compares this with sqlite-vec; README has the numbers.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from core.library import Library

#: The ``kind`` of a picture's own vector (text kinds are caption kinds: ``caption``, ...).
IMAGE_KIND = "image"


def text_hash(value: str) -> str:
    """The ``source_hash`` of an embedded text."""
    return hashlib.sha1(value.encode("utf-8")).hexdigest()


def to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


@dataclass(frozen=True)
class StoredVectors:
    """One ``(model, kinds)`` set in memory: row ``i`` of ``matrix`` is image ``image_ids[i]``."""

    image_ids: np.ndarray
    hashes: list[str]
    kinds: list[str]
    matrix: np.ndarray

    def __len__(self) -> int:
        return len(self.image_ids)


def existing_hashes(session: Session, model: str, kind: str) -> dict[int, str]:
    """``image_id -> source_hash`` of the stored vectors of one model and kind."""
    rows = session.execute(
        text("SELECT image_id, source_hash FROM embeddings WHERE model = :m AND kind = :k"),
        {"m": model, "k": kind},
    )
    return {image_id: h for image_id, h in rows}


def write_vectors(session: Session, model: str, kind: str,
                  items: Sequence[tuple[int, str]], vectors: np.ndarray) -> None:
    """Replace the vectors of *items* (``(image_id, source_hash)``) in one transaction.

    Delete then insert, so every changed vector gets a new id and readers see the change.
    """
    session.execute(
        text("DELETE FROM embeddings WHERE model = :m AND kind = :k AND image_id = :i"),
        [{"m": model, "k": kind, "i": image_id} for image_id, _ in items],
    )
    # An image deleted since it was read is skipped instead of failing the whole batch.
    session.execute(
        text("INSERT INTO embeddings (image_id, kind, model, source_hash, vector) "
             "SELECT :i, :k, :m, :h, :v WHERE EXISTS (SELECT 1 FROM images WHERE id = :i)"),
        [{"i": image_id, "k": kind, "m": model, "h": h, "v": to_blob(vec)}
         for (image_id, h), vec in zip(items, vectors, strict=True)],
    )


def delete_vectors(session: Session, model: str, kind: str, image_ids: Iterable[int]) -> int:
    ids = list(image_ids)
    if ids:
        session.execute(
            text("DELETE FROM embeddings WHERE model = :m AND kind = :k AND image_id = :i"),
            [{"m": model, "k": kind, "i": image_id} for image_id in ids],
        )
    return len(ids)


def _signature(session: Session, model: str, kinds: Sequence[str]) -> tuple[int, int]:
    marks = ", ".join(f":k{n}" for n in range(len(kinds)))
    params = {"m": model, **{f"k{n}": k for n, k in enumerate(kinds)}}
    count, top = session.execute(
        text(f"SELECT count(*), coalesce(max(id), 0) FROM embeddings WHERE model = :m AND kind IN ({marks})"),
        params,
    ).one()
    return int(count), int(top)


def _load(session: Session, model: str, kinds: Sequence[str]) -> StoredVectors:
    marks = ", ".join(f":k{n}" for n in range(len(kinds)))
    params = {"m": model, **{f"k{n}": k for n, k in enumerate(kinds)}}
    rows = session.execute(
        text(f"SELECT image_id, source_hash, kind, vector FROM embeddings "
             f"WHERE model = :m AND kind IN ({marks}) ORDER BY id"),
        params,
    ).all()
    if not rows:
        return StoredVectors(np.zeros(0, dtype=np.int64), [], [], np.zeros((0, 0), dtype=np.float32))
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    matrix = np.frombuffer(b"".join(r[3] for r in rows), dtype="<f4").reshape(len(rows), -1)
    return StoredVectors(ids, [r[1] for r in rows], [r[2] for r in rows], matrix)


_cache: dict[tuple[str, str, tuple[str, ...]], tuple[tuple[int, int], StoredVectors]] = {}
_cache_lock = threading.Lock()


def stored_vectors(library: Library, model: str, kinds: Sequence[str]) -> StoredVectors:
    """The vectors of *model* for *kinds*, from memory unless the table changed since."""
    key = (str(library.path), model, tuple(kinds))
    with library.db.read() as session:
        signature = _signature(session, model, kinds)
        with _cache_lock:
            cached = _cache.get(key)
        if cached is not None and cached[0] == signature:
            return cached[1]
        vectors = _load(session, model, kinds)
    with _cache_lock:
        _cache[key] = (signature, vectors)
    return vectors


def forget_cached(library: Library) -> None:
    """Drop a closed library's matrices from memory."""
    with _cache_lock:
        for key in [k for k in _cache if k[0] == str(library.path)]:
            del _cache[key]
