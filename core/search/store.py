"""Where the vectors live: the ``embeddings`` table of the library file, and a matrix in memory.

Vectors are float32 BLOBs in the same SQLite file as the images they describe, so they are
written and deleted in the same transactions (an image's rows go with it, FK cascade).
A query loads one set (a model's text vectors, of every caption kind, or its picture
vectors) into numpy once and scores it with one matrix
product; the set is cached per library and rows written since are appended (see
:func:`stored_vectors`).  ``benchmarks/search.py``
compares this with sqlite-vec; README has the numbers.
"""

from __future__ import annotations

import hashlib
import sys
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


@dataclass
class StoredVectors:
    """One ``(model, kinds)`` set in memory: row ``i`` is image ``image_ids[i]``.

    The matrix is kept as blocks so that rows written since the last load are appended
    without copying the rest; a replaced or deleted row may linger until the next full
    load, which is harmless because every hit is checked against the images first.
    """

    image_ids: np.ndarray
    #: ``source_hash`` per row (ASCII bytes: a 1M-row set would hold 90 MB of str objects).
    hashes: np.ndarray
    #: The kind per row (interned ``str`` objects: one per kind, not per row).
    kinds: np.ndarray
    blocks: list[np.ndarray]
    #: The largest ``embeddings.id`` loaded.
    top: int = 0

    def __len__(self) -> int:
        return len(self.image_ids)

    def scores(self, vector: np.ndarray) -> np.ndarray:
        """Cosine similarity of every row with the unit *vector*."""
        out = np.empty(len(self), dtype=np.float32)
        start = 0
        for block in self.blocks:
            # BLAS gemv straight into the result: no per-block arrays to concatenate.
            np.dot(block, vector, out=out[start:start + len(block)])
            start += len(block)
        return out

    def kind(self, row: int) -> str:
        return self.kinds[row]

    def hash(self, row: int) -> str:
        return self.hashes[row].decode("ascii").rstrip(" ")

    def vector(self, row: int) -> np.ndarray:
        for block in self.blocks:
            if row < len(block):
                return block[row]
            row -= len(block)
        raise IndexError(row)


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


#: A set loaded again from scratch when this many blocks were appended (stale rows dropped).
MAX_BLOCKS = 16


def _rows(session: Session, model: str, space: str, after: int) -> StoredVectors:
    """The rows of *model* in *space* (``text``: every caption kind; ``image``) with an id
    above *after*, as one block.

    Read with the driver's cursor in batches straight into preallocated arrays: ORM row
    objects for a million vectors cost more than reading them.
    """
    kind = "kind = :image" if space == "image" else "kind != :image"
    where = f"WHERE id > :after AND model = :m AND {kind}"
    params = {"m": model, "after": after, "image": IMAGE_KIND}
    count = session.scalar(text(f"SELECT count(*) FROM embeddings {where}"), params) or 0
    first = session.execute(text(f"SELECT vector FROM embeddings {where} ORDER BY id LIMIT 1"), params).first()
    if not count or first is None:
        return StoredVectors(np.zeros(0, dtype=np.int64), np.zeros(0, dtype="S40"), np.zeros(0, dtype=object),
                             [], after)
    dim = len(first[0]) // 4
    ids = np.empty(count, dtype=np.int64)
    image_ids = np.empty(count, dtype=np.int64)
    hashes = np.empty(count, dtype="S40")
    kinds = np.empty(count, dtype=object)
    matrix = np.empty((count, dim), dtype=np.float32)
    cursor = session.connection().connection.driver_connection.cursor()
    try:
        # Inside the session's transaction, so the count above still holds.  The unary ``+``
        # keeps SQLite on the rowid B-tree: a sequential read already in id order, where the
        # (model, kind) index would jump about the file and sort a temp copy of every vector.
        # Hashes padded to 40 characters, so a batch of them is one bytes object for numpy.
        cursor.execute(f"SELECT id, image_id, printf('%-40.40s', source_hash), kind, vector FROM embeddings "
                       f"WHERE id > ? AND +model = ? AND +{kind.replace(':image', '?')} ORDER BY id",
                       (after, model, IMAGE_KIND))
        done = 0
        while batch := cursor.fetchmany(50_000):
            end = done + len(batch)
            row_ids, row_images, row_hashes, row_kinds, blobs = zip(*batch, strict=True)
            ids[done:end] = np.fromiter(row_ids, dtype=np.int64, count=len(batch))
            image_ids[done:end] = np.fromiter(row_images, dtype=np.int64, count=len(batch))
            hashes[done:end] = np.frombuffer("".join(row_hashes).encode("ascii"), dtype="S40")
            kinds[done:end] = [sys.intern(k) for k in row_kinds]
            matrix[done:end] = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(batch), dim)
            done = end
    finally:
        cursor.close()
    return StoredVectors(image_ids[:done], hashes[:done], kinds[:done], [matrix[:done]],
                         int(ids[done - 1]) if done else after)


_cache: dict[tuple[str, str, str], StoredVectors] = {}
_cache_lock = threading.Lock()


def stored_vectors(library: Library, model: str, space: str) -> StoredVectors:
    """The vectors of *model* in *space* (``text`` or ``image``): from memory, plus any row written since.

    Ids are AUTOINCREMENT (never reused) and a changed vector is deleted and inserted
    again, so ``max(id)`` — one B-tree step — tells whether anything was written.
    """
    key = (str(library.path), model, space)
    with _cache_lock:
        cached = _cache.get(key)
    with library.db.read() as session:
        top = session.scalar(text("SELECT coalesce(max(id), 0) FROM embeddings")) or 0
        if cached is not None and cached.top >= top:
            return cached
        if cached is None or len(cached.blocks) >= MAX_BLOCKS:
            vectors = _rows(session, model, space, 0)
        else:
            new = _rows(session, model, space, cached.top)
            vectors = StoredVectors(np.concatenate([cached.image_ids, new.image_ids]),
                                    np.concatenate([cached.hashes, new.hashes]),
                                    np.concatenate([cached.kinds, new.kinds]),
                                    cached.blocks + new.blocks, max(top, cached.top))
        vectors.top = max(vectors.top, top)
    with _cache_lock:
        _cache[key] = vectors
    return vectors


def forget_cached(library: Library) -> None:
    """Drop a closed library's matrices from memory."""
    with _cache_lock:
        for key in [k for k in _cache if k[0] == str(library.path)]:
            del _cache[key]
