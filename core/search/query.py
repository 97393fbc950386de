"""Search by meaning: a query text (or a photo) against the stored vectors, ranked, with scores.

The same function serves ``captiondesk search`` and the window's "by meaning" mode and
"Find similar".  Results combine with an :class:`~core.queries.ImageFilter` (folder,
state, model, ...; its ``text`` is the query here, not a word filter).  A vector counts
only while it still describes its image: the image is present (``ok``) and its current
text (or picture) has the hash the vector was made from, so a changed caption, a changed,
missing or deleted photo never comes back from a stale index.  The same rule lets the
stored picture vectors confirm the pairs the duplicate hashes propose (:func:`picture_confirmer`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import text

from core.errors import UserFacingError
from core.queries import IN_CHUNK, ImageFilter, filtered_ids
from core.search.index_job import Space, kind_column
from core.search.store import IMAGE_KIND, StoredVectors, stored_vectors, text_hash

if TYPE_CHECKING:
    from core.library import Library

DEFAULT_LIMIT = 50
#: Cosine at or above which two pictures' vectors confirm a pair the duplicate hashes proposed:
#: lenient, because the index only has to veto hash collisions between different pictures.
MIN_PICTURE_SIMILARITY = 0.9


class NotIndexedError(UserFacingError):
    """The photo asked about has no picture vector yet."""


class SimilarityRangeError(UserFacingError, ValueError):
    """A minimum similarity outside the cosine's range, -1..1."""


@dataclass(frozen=True)
class Hit:
    image_id: int
    #: Cosine similarity, -1..1 (higher = closer in meaning).
    score: float
    #: What matched: a caption kind, or ``image`` for the picture.
    kind: str


def _model(space: Space, model: str | None) -> str:
    from core.search.embedders import DEFAULT_IMAGE_MODEL, DEFAULT_TEXT_MODEL

    return model or (DEFAULT_TEXT_MODEL if space == "text" else DEFAULT_IMAGE_MODEL)


def search(library: Library, query: str, *, by: Space = "text", flt: ImageFilter | None = None,
           limit: int | None = DEFAULT_LIMIT, model: str | None = None,
           encode: Callable[[str, str, str], np.ndarray] | None = None) -> list[Hit]:
    """The images whose captions (*by* ``text``) or pictures (``image``) mean *query*, best first.

    *encode* ``(space, model, text)`` embeds the query elsewhere (the window's search
    worker process); by default this process loads the model once and keeps it.
    """
    name = _model(by, model)
    if encode is None:
        from core.search.worker_process import embed_query

        encode = embed_query
    vector = encode(by, name, query)
    return rank(library, name, by, vector, flt=flt, limit=limit)


def similar(library: Library, image_id: int, *, flt: ImageFilter | None = None,
            limit: int | None = DEFAULT_LIMIT, model: str | None = None) -> list[Hit]:
    """The photos that look most like photo *image_id* (itself left out), best first."""
    name = _model("image", model)
    vectors = stored_vectors(library, name, "image")
    rows = np.flatnonzero(vectors.image_ids == image_id)
    if not len(rows):
        raise NotIndexedError("this photo is not in the image index yet: run 'captiondesk index --by image' "
                              "(the window indexes in the background) and try again")
    return rank(library, name, "image", vectors.vector(int(rows[0])), flt=flt, limit=limit, exclude=image_id)


def rank(library: Library, model: str, space: Space, vector: np.ndarray, *,
         flt: ImageFilter | None = None, limit: int | None = DEFAULT_LIMIT, exclude: int | None = None) -> list[Hit]:
    """The stored vectors of *model* in *space* closest to *vector*, checked fresh, one hit per image."""
    vectors = stored_vectors(library, model, space)
    if not len(vectors):
        return []
    scores = vectors.scores(np.asarray(vector, dtype=np.float32))
    if flt is not None and flt != ImageFilter():
        with library.db.read() as session:
            allowed = np.asarray(filtered_ids(session, flt.with_(text="", sort="name")), dtype=np.int64)
        scores = np.where(np.isin(vectors.image_ids, allowed), scores, -np.inf)
    if exclude is not None:
        scores = np.where(vectors.image_ids == exclude, -np.inf, scores)
    wanted = len(scores) if limit is None else limit
    hits: dict[int, Hit] = {}
    seen = 0
    take = min(len(scores), 2 * wanted + 16)
    while True:
        # argpartition on the scores themselves: negating a million of them first costs a copy.
        top = np.argpartition(scores, len(scores) - take)[-take:] if take < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        fresh = [int(r) for r in top[seen:] if np.isfinite(scores[r])]
        for row in _still_current(library, vectors, fresh):
            image_id = int(vectors.image_ids[row])
            if image_id not in hits:
                hits[image_id] = Hit(image_id, float(scores[row]), vectors.kind(row))
        seen = len(top)
        if len(hits) >= wanted or take >= len(scores) or not np.isfinite(scores[top[-1]]):
            break
        take = min(len(scores), take * 4)
    ranked = sorted(hits.values(), key=lambda h: -h.score)
    return ranked if limit is None else ranked[:limit]


def picture_confirmer(
    library: Library, *, model: str | None = None, min_similarity: float = MIN_PICTURE_SIMILARITY,
) -> Callable[[Sequence[tuple[int, int]]], list[bool]] | None:
    """A ``core.duplicates.PairConfirmer`` from the stored picture vectors of *model* (no model loads).

    A pair of image ids is confirmed when both photos have a current vector with a cosine of
    at least *min_similarity*, or when either has none (the hashes decide alone).  None when
    *model* has no picture vectors in this library at all.
    """
    if not -1.0 <= min_similarity <= 1.0:
        raise SimilarityRangeError(f"the minimum similarity is a cosine, from -1 to 1, not {min_similarity}")
    name = _model("image", model)
    with library.db.read() as session:
        if session.execute(text("SELECT 1 FROM embeddings WHERE model = :m AND kind = :k LIMIT 1"),
                           {"m": name, "k": IMAGE_KIND}).first() is None:
            return None

    def confirm(pairs: Sequence[tuple[int, int]]) -> list[bool]:
        if not pairs:
            return []
        vectors = stored_vectors(library, name, "image")
        wanted = np.unique(np.asarray(pairs, dtype=np.int64))
        rows = np.flatnonzero(np.isin(vectors.image_ids, wanted)).tolist()
        # Rows in id order: an image's newest current row wins over one lingering in the cache.
        row_of = {int(vectors.image_ids[r]): r for r in _still_current(library, vectors, rows)}
        answers = [True] * len(pairs)
        both = [k for k, (a, b) in enumerate(pairs) if a in row_of and b in row_of]
        if both:
            first = np.stack([vectors.vector(row_of[pairs[k][0]]) for k in both])
            second = np.stack([vectors.vector(row_of[pairs[k][1]]) for k in both])
            cosines = np.einsum("ij,ij->i", first, second)  # stored vectors are unit length
            for k, cosine in zip(both, cosines, strict=True):
                answers[k] = bool(cosine >= min_similarity)
        return answers

    return confirm


def _still_current(library: Library, vectors: StoredVectors, rows: list[int]) -> list[int]:
    """The rows (in order) whose vector still describes its image as it is now."""
    keep: set[int] = set()
    with library.db.read() as session:
        for start in range(0, len(rows), IN_CHUNK):
            chunk = rows[start:start + IN_CHUNK]
            ids = sorted({int(vectors.image_ids[r]) for r in chunk})
            marks = ", ".join(str(i) for i in ids)  # ints from our own array, not user text
            pictures = dict(session.execute(text(
                f"SELECT id, coalesce(content_key, fingerprint) FROM images WHERE state = 'ok' AND id IN ({marks})"
            )).all())
            captions = {}
            if any(vectors.kind(r) != IMAGE_KIND for r in chunk):
                captions = {(i, k): text_hash(t) for k, i, t in session.execute(text(
                    f"SELECT {kind_column(session)}, c.image_id, c.text FROM captions c "
                    f"WHERE c.is_current = 1 AND c.image_id IN ({marks})"))}
            for r in chunk:
                image_id = int(vectors.image_ids[r])
                if image_id not in pictures:
                    continue
                kind = vectors.kind(r)
                now = pictures[image_id] if kind == IMAGE_KIND else captions.get((image_id, kind))
                if now == vectors.hash(r):
                    keep.add(r)
    return [r for r in rows if r in keep]
