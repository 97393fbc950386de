"""What the window's views draw, read from the store: grid rows, a caption with its history.

* :class:`ImageRow` / :func:`fetch_rows`: one grid cell's values, fetched in chunks by id;
* :class:`CaptionDetails` / :func:`caption_details`: the caption panel's current caption,
  the model's latest words and the history, each with its provenance;
* :func:`folder_tree` (:class:`FolderNode`, :class:`Counts`): the sidebar's folders with
  display-state counts; :func:`model_keys`: the model versions that wrote captions.

Which images, and in which order, is :mod:`core.queries`; this module reads the rows of
ids it is given, with the same raw-SQL reasoning (see there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from core.captions import format_confidence, history_action, provenance_lines
from core.kinds import CAPTION
from core.provenance import Provenance
from core.queries import CURRENT_JOIN, IN_CHUNK, STATE_SQL, DisplayState, ModelKey, current_join, display_state

# -- rows for the grid ------------------------------------------------------------------


@dataclass(slots=True)
class ImageRow:
    """What the grid needs to draw one image (a plain value, safe across threads)."""

    id: int
    root_id: int
    root_path: str
    rel_path: str
    fingerprint: str
    image_state: str
    error: str | None
    width: int | None
    height: int | None
    caption_id: int | None
    caption: str | None
    source: str | None
    score: float | None
    model_name: str | None
    #: The caption that described this file's earlier picture (see ``changed``).
    outdated_caption_id: int | None = None

    @property
    def state(self) -> DisplayState:
        return display_state(self.image_state, self.source, self.outdated_caption_id is not None)

    @property
    def path(self) -> str:
        from core.filenames import to_os  # a name that is not UTF-8 is stored escaped

        return to_os(f"{self.root_path.rstrip('/')}/{self.rel_path}")

    @property
    def name(self) -> str:
        return self.rel_path.rsplit("/", 1)[-1]


def fetch_rows(session: Session, ids: Sequence[int], kind: str = CAPTION) -> dict[int, ImageRow]:
    """Grid rows for *ids* (any order; missing ids are simply absent), with their current value of *kind*."""
    rows: dict[int, ImageRow] = {}
    for start in range(0, len(ids), IN_CHUNK):
        chunk = ",".join(str(int(x)) for x in ids[start : start + IN_CHUNK])
        sql = (
            "SELECT i.id, i.root_id, r.path, i.rel_path, i.fingerprint, i.state, i.error,"
            " i.width, i.height, c.id, c.text, c.source, c.score, c.model_name, i.outdated_caption_id"
            f"{current_join(kind)} JOIN library_roots r ON r.id = i.root_id WHERE i.id IN ({chunk})"
        )
        for values in session.execute(text(sql)):
            rows[values[0]] = ImageRow(*values)
    return rows


# -- caption details for the panel ----------------------------------------------------------


@dataclass(frozen=True)
class CaptionInfo:
    """One caption row with its provenance, detached from any session."""

    id: int
    image_id: int
    text: str
    source: str
    is_current: bool
    model_name: str | None
    adapter: str | None
    record: Provenance | None
    score: float | None
    origin: str | None
    parent_id: int | None
    created_at: datetime | None

    #: What happened when this row was written, in words ("edited by a person", ...):
    #: see :func:`core.captions.history_action`.
    action: str = ""

    def provenance(self) -> str:
        """One line saying who wrote this caption and how."""
        if self.source == "model":
            who = self.model_name or "model"
            if self.adapter:
                who += f" + {self.adapter}"
            restyle = self.record.extra.get("restyle") if self.record is not None else None
            if isinstance(restyle, Mapping):
                # A two-stage caption: the captioner described, the restyler wrote these words.
                restyler = str(restyle.get("version") or restyle.get("restyler") or "?").rstrip("/").rsplit("/", 1)[-1]
                bits = [f"captioner {who}", f"restyler {restyler}"]
            else:
                bits = [f"model {who}"]
            if self.score is not None:
                bits.append(f"confidence {format_confidence(self.score)}")
            if self.action and self.action != "model":
                bits.append("bulk-replaced, unreviewed")
            return ", ".join(bits)
        if self.source == "human":
            who = self.action or "verified by a person"
            return who + (f" (imported from {self.origin})" if self.origin else "")
        return f"imported from {self.origin}" if self.origin else "imported"

    def provenance_lines(self) -> list[str]:
        """Readable provenance, one fact a line (see :func:`core.captions.provenance_lines`)."""
        return provenance_lines(
            source=self.source,
            model_name=self.model_name,
            adapter=self.adapter,
            provenance=self.record,
            score=self.score,
            origin=self.origin,
            created_at=self.created_at,
            action=self.action,
        )


@dataclass(frozen=True)
class CaptionDetails:
    image_id: int
    current: CaptionInfo | None
    #: The newest caption a model wrote for the image, current or not, to show beside
    #: the person's (never a bulk replacement of it).
    latest_model: CaptionInfo | None
    history: list[CaptionInfo] = field(default_factory=list)


def _info(row: Any) -> CaptionInfo:
    return CaptionInfo(
        id=row.id,
        image_id=row.image_id,
        text=row.text,
        source=row.source,
        is_current=bool(row.is_current),
        model_name=row.model_name,
        adapter=row.adapter,
        record=row.provenance,
        score=row.score,
        origin=row.origin,
        parent_id=row.parent_id,
        created_at=row.created_at,
    )


def caption_details(session: Session, image_id: int, kind: str = CAPTION) -> CaptionDetails:
    from core.captions import caption_history

    rows = caption_history(session, image_id, kind)
    by_id = {c.id: c for c in rows}
    history = [
        replace(_info(c), action=history_action(c.source, c.text, c.provenance, by_id.get(c.parent_id)))
        for c in rows
    ]
    current = next((c for c in history if c.is_current), None)
    # What the model wrote: a bulk find-and-replace keeps the model as source, but its
    # words are not the model's (and an undone replacement must not come back from here).
    latest_model = next((c for c in reversed(history)
                         if c.source == "model" and (c.record is None or c.record.bulk_replace is None)), None)
    return CaptionDetails(image_id, current, latest_model, history)


# -- model versions and folder counts -------------------------------------------------------


def model_keys(session: Session) -> list[tuple[ModelKey, int]]:
    """Model versions that wrote captions in this library, with how many captions each."""
    sql = (
        "SELECT model_name, adapter, count(*) FROM captions"
        " WHERE source = 'model' AND model_name IS NOT NULL"
        " GROUP BY model_name, adapter ORDER BY model_name, adapter"
    )
    return [(ModelKey(name, adapter), n) for name, adapter, n in session.execute(text(sql))]


@dataclass
class Counts:
    images: int = 0
    uncaptioned: int = 0
    model: int = 0
    verified: int = 0
    imported: int = 0
    errors: int = 0
    missing: int = 0
    changed: int = 0

    def add(self, other: Counts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class FolderNode:
    """A folder in the sidebar: counts include every sub-folder."""

    root_id: int
    name: str
    #: Path relative to the root, ending in "/" ("" for the root itself).
    prefix: str
    counts: Counts = field(default_factory=Counts)
    children: dict[str, FolderNode] = field(default_factory=dict)


def folder_tree(session: Session) -> list[FolderNode]:
    """One node per library root, with sub-folders and display-state counts.

    The per-folder aggregation runs in SQL: ``rtrim(p, replace(p, '/', ''))`` strips
    everything after the last ``/`` (the characters of the file name), which gives the
    folder of each image without a custom SQL function.  Only the few hundred folder
    rows come back to Python to be rolled up into the tree.
    """
    roots = session.execute(text("SELECT id, path FROM library_roots ORDER BY path")).all()
    nodes = {rid: FolderNode(rid, path, "") for rid, path in roots}
    sql = (
        "SELECT i.root_id, rtrim(i.rel_path, replace(i.rel_path, '/', '')) AS dir, count(*),"
        f" sum({STATE_SQL['uncaptioned']}), sum({STATE_SQL['model']}),"
        f" sum({STATE_SQL['verified']}), sum({STATE_SQL['imported']}),"
        f" sum({STATE_SQL['error']}), sum({STATE_SQL['missing']}), sum({STATE_SQL['changed']})"
        f"{CURRENT_JOIN} GROUP BY i.root_id, dir"
    )
    for root_id, folder, *numbers in session.execute(text(sql)):
        root = nodes.get(root_id)
        if root is None:
            continue
        counts = Counts(*(int(n or 0) for n in numbers))
        root.counts.add(counts)
        node = root
        prefix = ""
        for part in [p for p in folder.split("/") if p]:
            prefix += part + "/"
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = FolderNode(root_id, part, prefix)
            child.counts.add(counts)
            node = child
    return [nodes[rid] for rid, _path in roots]
