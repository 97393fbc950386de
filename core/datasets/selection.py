"""What an export reads from the library: the captioned images in scope, streamed in chunks.

"Captioned" means a current value of one caption kind (:mod:`core.kinds`): ``caption``
unless the export writes another kind's values (``export sidecar --kind keywords``).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Integer, func, literal_column, or_, select, type_coerce
from sqlalchemy.orm import aliased
from sqlalchemy.sql import Select

from core.datasets.errors import ExportError
from core.db import Database
from core.filenames import to_os
from core.kinds import CAPTION
from core.models import Caption, CaptionSource, DuplicateMark, Image, ImageState, LibraryRoot
from core.queries import FolderNotInLibraryError, FolderScope, in_folder, resolve_folder
from core.splits import DEFAULT_SEED, DEFAULT_VAL_RATIO, SPLITS, assign_split, split_key_sql, validate_val_ratio

#: ``captioned``: any current caption; ``verified``: the current caption is a person's.
ONLY_CHOICES = ("captioned", "verified")
#: Rows per database read while streaming the selection.
CHUNK_SIZE = 500


def folder_scope(db: Database, folder: Path | str) -> FolderScope:
    """*folder* as a library scope (:func:`core.queries.resolve_folder`); ExportError if outside."""
    with db.read() as session:
        try:
            return resolve_folder(session, folder)
        except FolderNotInLibraryError as exc:
            raise ExportError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class CaptionedImage:
    """One image with its current caption, as streamed from the library."""

    image_id: int
    root_id: int
    root_path: str
    rel_path: str
    fingerprint: str
    state: str
    error: str | None
    width: int | None
    height: int | None
    size: int
    mtime_ns: int
    caption_id: int
    text: str
    source: str
    model_name: str | None
    adapter: str | None
    origin: str | None
    score: float | None
    caption_created_at: datetime
    #: What the train/validation split hashes: its duplicate group's key, else the
    #: fingerprint before the file's first change (e.g. metadata written into it), else the fingerprint.
    split_key: str

    @property
    def path(self) -> Path:
        return Path(to_os(self.root_path)) / to_os(self.rel_path)


# "is_current + 0" rather than "is_current = 1": on the bare column SQLite picks the
# (is_current, source) index, reads every current caption and sorts them again for each
# chunk of the keyset pagination below (quadratic in the library's size).  With the
# expression it walks images by id and looks each caption up by image_id (see
# docs/optimization-notes.md, "Streaming an export").
_current_flag = type_coerce(Caption.is_current, Integer) + 0


#: The split key column (the duplicate group's key first), spelled once in core.splits.
_split_key = literal_column(split_key_sql("images"))


def _captioned_query(
    only: str, folder: FolderScope | None, image_ids: Collection[int] | None = None, *, for_dataset: bool = False,
    kind: str = CAPTION,
) -> Select[Any]:
    """The selection; *for_dataset* (export) leaves out near-duplicates "keep one" excluded."""
    if only not in ONLY_CHOICES:
        raise ExportError(f"--only must be one of {', '.join(ONLY_CHOICES)}, not {only!r}")
    query = (
        select(
            Image.id, Image.root_id, LibraryRoot.path, Image.rel_path, Image.fingerprint,
            Image.state, Image.error, Image.width, Image.height, Image.size, Image.mtime_ns,
            Caption.id, Caption.text, Caption.source, Caption.model_name, Caption.adapter,
            Caption.origin, Caption.score, Caption.created_at,
            _split_key,
        )
        .join(Caption, (Caption.image_id == Image.id) & (Caption.kind == kind) & (_current_flag == 1))
        .join(LibraryRoot, LibraryRoot.id == Image.root_id)
    )
    if only == "verified":
        query = query.where(Caption.source == CaptionSource.HUMAN.value)
    if for_dataset:
        query = query.where(or_(Image.duplicate_mark.is_(None), Image.duplicate_mark != DuplicateMark.EXCLUDED.value))
    query = _in_scope(query, folder, image_ids)
    return query


def iter_captioned_images(
    db: Database, *, only: str = "captioned", folder: FolderScope | None = None,
    image_ids: Collection[int] | None = None, chunk_size: int = CHUNK_SIZE, for_dataset: bool = False,
    kind: str = CAPTION,
) -> Iterator[CaptionedImage]:
    """Every image with a current caption (whatever its state), by id, in short reads.

    Keyset pagination on the image id: each chunk is its own short read transaction, so
    a 100 000-image export holds neither 100 000 objects nor a read lock for its length.
    """
    base = _captioned_query(only, folder, image_ids, for_dataset=for_dataset, kind=kind)
    last_id = 0
    while True:
        query = base.where(Image.id > last_id).order_by(Image.id).limit(chunk_size)
        with db.read() as session:
            rows = session.execute(query).all()
        if not rows:
            return
        for row in rows:
            yield CaptionedImage(*row)
        last_id = rows[-1][0]


def count_captioned_images(
    db: Database, *, only: str = "captioned", folder: FolderScope | None = None,
    image_ids: Collection[int] | None = None, for_dataset: bool = False, kind: str = CAPTION,
) -> int:
    """How many images an export (*for_dataset*) or metadata write with these choices would take."""
    query = _captioned_query(only, folder, image_ids, for_dataset=for_dataset, kind=kind).with_only_columns(
        func.count(Image.id))
    with db.read() as session:
        return session.scalar(query) or 0


def count_export_split(
    db: Database, *, only: str = "captioned", folder: FolderScope | None = None,
    image_ids: Collection[int] | None = None, val_ratio: float = DEFAULT_VAL_RATIO, seed: int = DEFAULT_SEED,
    kind: str = CAPTION,
) -> dict[str, int]:
    """How many images each split of an export with these choices would get, before it runs.

    The same split keys and :func:`assign_split` as the export itself; images that turn
    out to be missing or unreadable during the export are left out there, so these
    counts are an upper bound.
    """
    val_ratio = validate_val_ratio(val_ratio)
    query = _captioned_query(only, folder, image_ids, for_dataset=True, kind=kind).with_only_columns(_split_key)
    counts = dict.fromkeys(SPLITS, 0)
    with db.read() as session:
        for (key,) in session.execute(query):
            counts[assign_split(key, val_ratio, seed)] += 1
    return counts


def library_root_labels(
    db: Database, only: str, folder: FolderScope | None, image_ids: Collection[int] | None = None,
    kind: str = CAPTION,
) -> dict[int, str]:
    """Folder names to prefix file names with when the export spans several roots."""
    query = _captioned_query(only, folder, image_ids, kind=kind).with_only_columns(Image.root_id, LibraryRoot.path).distinct()
    with db.read() as session:
        roots = sorted(session.execute(query).all())
    if len(roots) <= 1:
        return {}
    names = [Path(path).name or "root" for _id, path in roots]
    folded = [name.casefold() for name in names]
    labels: dict[int, str] = {}
    taken: set[str] = set()
    for (root_id, _path), name in zip(roots, names, strict=True):
        label = name if folded.count(name.casefold()) == 1 else f"{name}-{root_id}"
        # "photos-2" may also be another root's own name: never share a folder.
        number = 1
        candidate = label
        while candidate.casefold() in taken or (candidate != name and candidate.casefold() in folded):
            number += 1
            candidate = f"{label}~{number}"
        taken.add(candidate.casefold())
        labels[root_id] = candidate
    return labels


def _in_scope(query: Select[Any], folder: FolderScope | None, image_ids: Collection[int] | None) -> Select[Any]:
    """*query* limited to the images under *folder* and among *image_ids* (either may be None)."""
    if folder is not None:
        query = query.where(Image.root_id == folder.root_id)
        if folder.prefix:
            query = query.where(in_folder(Image.rel_path, folder.prefix))
    if image_ids is not None:
        # One JSON parameter, not one per id: a 100 000-image selection stays under
        # SQLite's bound-parameter limit.
        ids = func.json_each(json.dumps(sorted({int(i) for i in image_ids}))).table_valued("value")
        query = query.where(Image.id.in_(select(ids.c.value)))
    return query


def outdated_images(
    db: Database, *, only: str = "captioned", folder: FolderScope | None = None,
    image_ids: Collection[int] | None = None,
) -> list[Path]:
    """Paths of the images in scope that are *changed since captioned* and whose old
    caption an export with *only* would have taken: what it leaves out for that reason."""
    old = aliased(Caption)
    query = (
        select(LibraryRoot.path, Image.rel_path)
        .join(LibraryRoot, LibraryRoot.id == Image.root_id)
        .join(old, old.id == Image.outdated_caption_id)
        .where(Image.state == ImageState.OK.value)
        .where(~select(Caption.id).where(Caption.image_id == Image.id, Caption.kind == CAPTION, _current_flag == 1).exists())
        .order_by(Image.root_id, Image.rel_path)
    )
    if only == "verified":
        query = query.where(old.source == CaptionSource.HUMAN.value)
    query = _in_scope(query, folder, image_ids)
    with db.read() as session:
        return [Path(to_os(root)) / to_os(rel) for root, rel in session.execute(query)]
