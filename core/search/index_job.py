"""The index job (``captiondesk index``, the window's background indexing): keep the vectors current.

Incremental and resumable by construction: each text (or picture) is keyed by its hash
(or content key), so a run embeds only what is new or changed since the vectors were
written, commits each batch in its own short write transaction, and a cancelled or
crashed run leaves every finished batch in place for the next one.  Vectors whose text
no longer exists (or whose image is gone) are deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from core.jobs import NEVER_CANCELLED, CancelToken, JobStats, ProgressCallback, no_progress
from core.search.store import IMAGE_KIND, delete_vectors, existing_hashes, text_hash, write_vectors

if TYPE_CHECKING:
    from core.library import Library

Space = Literal["text", "image"]

_CURRENT_TEXTS = ("SELECT {kind}, c.image_id, c.text FROM captions c JOIN images i ON i.id = c.image_id "
                  "WHERE c.is_current = 1 AND i.state = 'ok' AND trim(c.text) != ''")

_PICTURES = ("SELECT i.id, coalesce(i.content_key, i.fingerprint), r.path, i.rel_path FROM images i "
             "JOIN library_roots r ON r.id = i.root_id WHERE i.state = 'ok'")


@dataclass(kw_only=True)
class IndexStats(JobStats):
    TITLE: ClassVar[str] = "Indexing"
    LABELS = {"embedded": ("embedded", "embedded"), "unchanged": ("unchanged", "unchanged"),
              "removed": ("removed", "removed"), "errors": ("error", "errors")}

    embedded: int = 0
    unchanged: int = 0
    removed: int = 0
    errors: int = 0


def kind_column(session: Session) -> str:
    """SQL for a caption row's kind: its ``kind`` column, or ``'caption'`` in a library
    from before caption kinds."""
    columns = {row[1] for row in session.execute(text("PRAGMA table_info(captions)"))}
    return "c.kind" if "kind" in columns else "'caption'"


def current_sources(library: Library, space: Space, model: str) -> dict[str, dict[int, str]]:
    """What should be embedded now: ``kind -> {image_id: text}`` for every caption kind
    (pictures: ``image -> {image_id: content key}``), plus the kinds *model* has vectors of
    that no longer have a current text (empty, so their vectors are removed)."""
    with library.db.read() as session:
        if space == "image":
            rows = session.execute(text(_PICTURES)).all()
            return {IMAGE_KIND: {r[0]: r[1] for r in rows}}
        stored = session.scalars(text("SELECT DISTINCT kind FROM embeddings WHERE model = :m AND kind != :i"),
                                 {"m": model, "i": IMAGE_KIND})
        sources: dict[str, dict[int, str]] = {kind: {} for kind in stored}
        for kind, image_id, value in session.execute(text(_CURRENT_TEXTS.format(kind=kind_column(session)))):
            sources.setdefault(kind, {})[image_id] = value
        return sources


def update_index(
    library: Library,
    space: Space = "text",
    model: str | None = None,
    *,
    batch_size: int = 32,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken = NEVER_CANCELLED,
) -> IndexStats:
    """Embed every new or changed caption text (*space* ``text``) or picture (``image``)."""
    from core.search import embedders

    stats = IndexStats()
    name = model or (embedders.DEFAULT_TEXT_MODEL if space == "text" else embedders.DEFAULT_IMAGE_MODEL)
    with library.job("index", {"space": space, "model": name}, stats, progress) as run:
        wanted = current_sources(library, space, name)
        todo: list[tuple[str, int, str]] = []
        for kind, sources in wanted.items():
            with library.db.read() as session:
                have = existing_hashes(session, name, kind)
            gone = [image_id for image_id in have if image_id not in sources]
            if gone:
                with library.db.write() as session:
                    stats.removed += delete_vectors(session, name, kind, gone)
            for image_id, source in sources.items():
                key = source if space == "image" else text_hash(source)
                if have.get(image_id) == key:
                    stats.unchanged += 1
                else:
                    todo.append((kind, image_id, source))
        total = len(todo)
        run.progress(0, total, "Loading the embedding model", force=True)
        if not todo:
            return stats
        embed = _text_batches(name) if space == "text" else _image_batches(library, name, run.problem)
        for start in range(0, total, batch_size):
            if cancel.is_set():
                stats.cancelled = True
                break
            batch = todo[start:start + batch_size]
            items, vectors = embed(batch)
            stats.errors += len(batch) - len(items)
            for kind in {k for k, _, _ in batch}:
                mine = [(i, (image_id, key)) for i, (k, image_id, key) in enumerate(items) if k == kind]
                if mine:
                    with library.db.write() as session:
                        write_vectors(session, name, kind, [it for _, it in mine], vectors[[i for i, _ in mine]])
            stats.embedded += len(items)
            run.progress(min(start + batch_size, total), total, "Indexing", force=True)
    return stats


Work = list[tuple[str, int, str]]
EmbedBatch = Callable[[Work], tuple[Work, np.ndarray]]


def _text_batches(name: str) -> EmbedBatch:
    from core.search.embedders import text_embedder

    embedder = text_embedder(name)

    def embed(batch: list[tuple[str, int, str]]) -> tuple[list[tuple[str, int, str]], np.ndarray]:
        vectors = embedder.encode([source for _, _, source in batch])
        return [(kind, image_id, text_hash(source)) for kind, image_id, source in batch], vectors

    return embed


def _image_batches(library: Library, name: str, problem: Callable[[str], None]) -> EmbedBatch:
    from pathlib import Path

    from core.filenames import to_os
    from core.imaging import load_model_input
    from core.search.embedders import image_embedder

    embedder = image_embedder(name)
    with library.db.read() as session:
        places = {r[0]: Path(to_os(r[2])) / to_os(r[3]) for r in session.execute(text(_PICTURES))}

    def embed(batch: list[tuple[str, int, str]]) -> tuple[list[tuple[str, int, str]], np.ndarray]:
        items, pictures = [], []
        for kind, image_id, key in batch:
            path = places.get(image_id)
            try:
                if path is None:
                    raise FileNotFoundError("no longer in the library")
                pictures.append(load_model_input(path, embedder.input_side))
            except Exception as exc:  # noqa: BLE001 - one bad photo is that photo's problem
                problem(f"{path}: {exc}")
                continue
            items.append((kind, image_id, key))
        if not pictures:
            return [], np.zeros((0, embedder.dim), dtype=np.float32)
        return items, embedder.encode_images(pictures)

    return embed
