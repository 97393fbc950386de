"""What ``write-metadata`` reads from the library: each photo in scope with its current value of each kind.

A photo is in scope when it has a current value of one of the kinds being written (with
``only="verified"``: a person's value), so a photo with alt text but no caption yet is
written too.  Streamed in chunks of photos, each chunk its own short read.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Integer, func, select, type_coerce
from sqlalchemy.sql import Select

from core.datasets.errors import ExportError
from core.datasets.selection import CHUNK_SIZE, ONLY_CHOICES, _in_scope
from core.db import Database
from core.filenames import to_os
from core.models import Caption, CaptionSource, Image, LibraryRoot
from core.queries import FolderScope

_current_flag = type_coerce(Caption.is_current, Integer) + 0


@dataclass(frozen=True, slots=True)
class PhotoValues:
    """One photo and its current values of the kinds being written (kind → stored text)."""

    image_id: int
    root_path: str
    rel_path: str
    state: str
    size: int
    mtime_ns: int
    values: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(to_os(self.root_path)) / to_os(self.rel_path)


def _value_rows(kinds: Collection[str], only: str, folder: FolderScope | None,
                image_ids: Collection[int] | None) -> Select[Any]:
    if only not in ONLY_CHOICES:
        raise ExportError(f"--only must be one of {', '.join(ONLY_CHOICES)}, not {only!r}")
    query = (
        select(Image.id, LibraryRoot.path, Image.rel_path, Image.state, Image.size, Image.mtime_ns,
               Caption.kind, Caption.text)
        .join(Caption, (Caption.image_id == Image.id) & (_current_flag == 1) & Caption.kind.in_(list(kinds)))
        .join(LibraryRoot, LibraryRoot.id == Image.root_id)
    )
    if only == "verified":
        query = query.where(Caption.source == CaptionSource.HUMAN.value)
    return _in_scope(query, folder, image_ids)


def count_photos_with_values(db: Database, kinds: Collection[str], *, only: str = "captioned",
                             folder: FolderScope | None = None, image_ids: Collection[int] | None = None) -> int:
    query = _value_rows(kinds, only, folder, image_ids).with_only_columns(func.count(func.distinct(Image.id)))
    with db.read() as session:
        return session.scalar(query) or 0


def iter_photos_with_values(db: Database, kinds: Collection[str], *, only: str = "captioned",
                            folder: FolderScope | None = None, image_ids: Collection[int] | None = None,
                            chunk_size: int = CHUNK_SIZE) -> Iterator[PhotoValues]:
    """Every photo with a current value of one of *kinds*, by id, with those values."""
    base = _value_rows(kinds, only, folder, image_ids)
    last_id = 0
    while True:
        ids = base.with_only_columns(Image.id).where(Image.id > last_id).distinct().order_by(Image.id).limit(chunk_size)
        with db.read() as session:
            chunk = list(session.scalars(ids))
            if not chunk:
                return
            rows = session.execute(base.where(Image.id.in_(chunk)).order_by(Image.id)).all()
        photos: dict[int, PhotoValues] = {}
        for image_id, root_path, rel_path, state, size, mtime_ns, kind, text in rows:
            photo = photos.setdefault(image_id, PhotoValues(image_id, root_path, rel_path, state, size, mtime_ns))
            photo.values[kind] = text
        yield from photos.values()
        last_id = chunk[-1]
