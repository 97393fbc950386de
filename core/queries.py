"""The store's read side: which images (state, folder, filters), sorting, search, review order.

One definition of each idea, used by the GUI, the captioning engine, export, metadata
writing, training data and ``Library.status``:

* :class:`ImageFilter` describes "which images" (root + folder prefix, states, text,
  model, scores); :func:`filter_sql` is its WHERE clause for callers that pick their own
  columns over :data:`CURRENT_JOIN`.
* :func:`resolve_folder` turns a folder on disk into a :class:`FolderScope` (root id +
  root-relative prefix); :func:`folder_range` / :func:`in_folder` are "under this folder".
* :data:`STATE_SQL` / :func:`display_state` are the image states.
* The review queue's steps (:func:`least_confident`, :func:`next_in_state`) and
  find-and-replace's matches (:func:`find_replace_candidates`).

What the views draw for the ids found here (grid rows, caption details, folder counts)
is read by :mod:`core.view_rows`.

Everything here is plain SQLAlchemy over a :class:`~sqlalchemy.orm.Session` and never
imports Qt, so it is tested without a display and runs on worker threads.

Why raw SQL text instead of ORM queries: the grid asks for the ids of up to 100 000
images at a time and for chunks of a few hundred rows while scrolling; building ORM
objects for those would cost more than the queries themselves.  The SQL is assembled
only from fixed fragments; every user value travels as a bound parameter.

The *display state* of an image (the badge in the grid) is derived in one place,
:data:`STATE_SQL` / :func:`display_state`, so filters, counts and badges always agree:
``error`` and ``missing`` (the file) win over the caption; otherwise the current
caption's source decides: none → ``uncaptioned``, model → ``model``, a person's →
``verified``, an import → ``imported``.  No current caption because the picture changed
at the same path after it was captioned (the scanner moved that caption to history,
``images.outdated_caption_id``) → ``changed`` ("changed since captioned").
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import and_, text
from sqlalchemy.orm import Session

from core.jobs import count_phrase
from core.kinds import CAPTION, keyword_terms, kind_sql

DisplayState = Literal["uncaptioned", "model", "verified", "imported", "changed", "error", "missing"]
DISPLAY_STATES: tuple[DisplayState, ...] = (
    "uncaptioned",
    "model",
    "verified",
    "imported",
    "changed",
    "error",
    "missing",
)
SortKey = Literal["name", "date", "confidence"]

#: SQL condition for each display state, over ``images i`` LEFT JOIN current ``captions c``.
STATE_SQL: dict[str, str] = {
    "uncaptioned": "(i.state = 'ok' AND c.id IS NULL AND i.outdated_caption_id IS NULL)",
    "model": "(i.state = 'ok' AND c.source = 'model')",
    "verified": "(i.state = 'ok' AND c.source = 'human')",
    "imported": "(i.state = 'ok' AND c.source = 'import')",
    "changed": "(i.state = 'ok' AND c.id IS NULL AND i.outdated_caption_id IS NOT NULL)",
    "error": "(i.state = 'error')",
    "missing": "(i.state = 'missing')",
}

#: The images a caption run writes a caption for without being told to overwrite: none
#: yet, or one that described the file's earlier picture.
NEEDS_CAPTION: frozenset[str] = frozenset({"uncaptioned", "changed"})



def outdated_phrase(count: int) -> str:
    """Summary words for images a job left out because their picture changed."""
    were = "was" if count == 1 else "were"
    return f"{count_phrase(count, 'photo', 'photos')} changed since captioned {were} left out"


_SOURCE_STATE = {"model": "model", "human": "verified", "import": "imported"}

#: Largest number of bound parameters put in one ``IN (...)`` list (SQLite's default
#: limit is 32 766 on current builds, 999 on old ones; stay well under both).
IN_CHUNK = 900


def current_join(kind: str = CAPTION) -> str:
    """``images i`` with its current value ``c`` of *kind* (NULL columns when it has none)."""
    return f" FROM images i LEFT JOIN captions c ON c.image_id = i.id AND c.kind = {kind_sql(kind)} AND c.is_current = 1"


#: ``images i`` with its current caption ``c`` (the ``caption`` kind).
CURRENT_JOIN = current_join()
_FROM = CURRENT_JOIN


def display_state(image_state: str, caption_source: str | None, outdated: bool = False) -> DisplayState:
    """The badge of an image: see the module docstring (*outdated*: it has an
    ``outdated_caption_id``)."""
    if image_state == "error":
        return "error"
    if image_state == "missing":
        return "missing"
    if caption_source is None:
        return "changed" if outdated else "uncaptioned"
    return _SOURCE_STATE.get(caption_source, "model")  # type: ignore[return-value]


@dataclass(frozen=True)
class ModelKey:
    """A model version as captions record it: base model and optional adapter."""

    model_name: str
    adapter: str | None = None

    def label(self) -> str:
        return self.model_name if not self.adapter else f"{self.model_name} + {self.adapter}"


@dataclass(frozen=True)
class ImageFilter:
    """What the grid shows and in which order.  Immutable: the GUI swaps whole filters.

    ``text`` is a full-text query over the *current* captions (words are ANDed, the
    last one matches as a prefix so results follow typing), or over the file and
    folder names (the path relative to the root holds every word, case-insensitive);
    ``keyword:beach`` in it keeps photos whose keywords include beach (any hierarchy level;
    ``keyword:places|beach`` the whole path), whatever ``kind`` the filter looks at.  ``states`` empty means
    every state.  ``folder`` is a path prefix relative to ``root_id`` ending in ``/``
    ("2023/summer/"); sub-folders are included.  ``model`` keeps images whose current
    caption was written by that model version, or accepted/edited from one of its
    captions.  ``min_score``/``max_score`` bound the current caption's confidence
    (mean token log-prob, <= 0); setting either keeps only scored captions.
    """

    text: str = ""
    states: frozenset[str] = frozenset()
    root_id: int | None = None
    folder: str | None = None
    model: ModelKey | None = None
    min_score: float | None = None
    max_score: float | None = None
    sort: SortKey = "name"
    descending: bool = False
    #: Whose state, text, model and score the filter looks at (``core.kinds``).
    kind: str = CAPTION
    #: Only these images (a selection in the grid); None: no such limit.
    ids: tuple[int, ...] | None = None

    def with_(self, **changes: Any) -> ImageFilter:
        return replace(self, **changes)


def review_queue_filter(base: ImageFilter | None = None) -> ImageFilter:
    """Model captions, least confident first: the order in which to fix the worst; then
    (unscored) the pictures that changed since they were captioned."""
    base = base or ImageFilter()
    return base.with_(states=frozenset({"model", "changed"}), sort="confidence", descending=False)


_FTS_TOKEN = re.compile(r"\w+", re.UNICODE)


def fts_query(user_text: str) -> str | None:
    """Turn what a person typed into a safe FTS5 MATCH expression (None: match all).

    Each word becomes a quoted string (so FTS5 syntax characters such as ``"``, ``*``,
    ``-``, ``NEAR`` cannot produce a syntax error); words are ANDed; the last word also
    matches as a prefix, so "sun" finds "sunset" while the person is still typing.
    """
    words = _FTS_TOKEN.findall(user_text)
    if not words:
        return None
    parts = [f'"{w}"' for w in words[:-1]]
    parts.append(f'"{words[-1]}"*')
    return " AND ".join(parts)


# -- folder scope ---------------------------------------------------------------------------


class FolderNotInLibraryError(LookupError):
    """A folder on disk that is neither a library root nor inside one."""


@dataclass(frozen=True)
class FolderScope:
    """A library root, or a folder inside one: what "under this folder" means in the store.

    ``prefix`` is relative to the root, uses "/" and ends in "/" ("" for the root itself).
    """

    root_id: int
    root_path: str
    prefix: str = ""

    def image_filter(self, base: ImageFilter | None = None) -> ImageFilter:
        """*base* (default: everything) narrowed to this folder and its sub-folders."""
        return (base or ImageFilter()).with_(root_id=self.root_id, folder=self.prefix or None)


def resolve_folder(session: Session, folder: str | os.PathLike[str]) -> FolderScope:
    """The one folder resolver: a path on disk → the root that is it or contains it.

    The path is made absolute and its symlinks resolved, as roots are when added.
    Raises :class:`FolderNotInLibraryError` when no root is or contains *folder*.
    """
    target = Path(folder).expanduser().resolve()
    roots = session.execute(text("SELECT id, path FROM library_roots ORDER BY path")).all()
    for root_id, root_path in roots:
        root = Path(root_path)
        if target == root:
            return FolderScope(root_id, root_path)
        if target.is_relative_to(root):
            return FolderScope(root_id, root_path, target.relative_to(root).as_posix() + "/")
    raise FolderNotInLibraryError(f"{target} is not a library folder or inside one (add it first)")


def folder_range(prefix: str) -> tuple[str, str]:
    """``(lo, hi)`` with ``lo <= rel_path < hi`` exactly for paths under folder *prefix*.

    The one definition of "under this folder": a range on ``rel_path`` uses the
    ``(root_id, rel_path)`` unique index (LIKE and substr cannot), needs no escaping of
    ``%`` or ``_`` in folder names, and keeps a sibling such as ``2023-old/`` out of
    ``2023/`` because ``'0'`` is the character right after ``'/'``.
    """
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    return prefix, prefix[:-1] + "0"


def in_folder(rel_path: Any, prefix: str) -> Any:
    """SQLAlchemy condition: the column *rel_path* is under *prefix* (see folder_range)."""
    lo, hi = folder_range(prefix)
    return and_(rel_path >= lo, rel_path < hi)


def filter_sql(flt: ImageFilter, params: dict[str, Any]) -> str:
    """The WHERE clause (always at least ``1``) for *flt*, filling *params*.

    Written over ``images i`` left-joined to the current caption ``c`` (:data:`CURRENT_JOIN`),
    for callers that select their own columns through the one description of "which images".
    """
    where: list[str] = ["1"]
    if flt.ids is not None:
        # One JSON parameter instead of one placeholder per id: a selection may hold 100k.
        where.append("i.id IN (SELECT value FROM json_each(:selected_ids))")
        params["selected_ids"] = json.dumps([int(i) for i in flt.ids])
    if flt.states:
        unknown = set(flt.states) - set(STATE_SQL)
        if unknown:
            raise ValueError(f"unknown state(s): {sorted(unknown)}")
        where.append("(" + " OR ".join(STATE_SQL[s] for s in sorted(flt.states)) + ")")
    if flt.root_id is not None:
        where.append("i.root_id = :root_id")
        params["root_id"] = flt.root_id
    if flt.folder:
        where.append("i.rel_path >= :folder_lo AND i.rel_path < :folder_hi")
        params["folder_lo"], params["folder_hi"] = folder_range(flt.folder)
    if flt.model is not None:
        params["model_name"] = flt.model.model_name
        own = "c.model_name = :model_name"
        parent = "p.model_name = :model_name"
        if flt.model.adapter is None:
            own += " AND c.adapter IS NULL"
            parent += " AND p.adapter IS NULL"
        else:
            params["adapter"] = flt.model.adapter
            own += " AND c.adapter = :adapter"
            parent += " AND p.adapter = :adapter"
        where.append(
            f"(({own}) OR (c.source = 'human' AND EXISTS (SELECT 1 FROM captions p"
            f" WHERE p.id = c.parent_id AND {parent})))"
        )
    if flt.min_score is not None:
        where.append("c.score >= :min_score")
        params["min_score"] = float(flt.min_score)
    if flt.max_score is not None:
        where.append("c.score <= :max_score")
        params["max_score"] = float(flt.max_score)
    typed, keywords = keyword_terms(flt.text)
    for n, keyword in enumerate(keywords):
        # One keyword a line: a whole line (or, without "|", any level of one) equals it.
        lines = "k.text" if "|" in keyword else "replace(k.text, '|', char(10))"
        where.append(f"EXISTS (SELECT 1 FROM captions k WHERE k.image_id = i.id AND k.kind = {kind_sql('keywords')}"
                     f" AND k.is_current = 1 AND instr(char(10) || {lines} || char(10), :keyword_{n}) > 0)")
        params[f"keyword_{n}"] = f"\n{keyword}\n"
    match = fts_query(typed)
    if match is not None:
        # External-content FTS over every caption row; keep hits on current rows only.
        # Or the file/folder path holds every typed word ("IMG_1001", "Portugal 2023").
        name_terms = []
        for n, word in enumerate(typed.split()):
            params[f"name_{n}"] = "%" + _like_escape(word) + "%"
            name_terms.append(f"i.rel_path LIKE :name_{n} ESCAPE '\\'")
        where.append(
            "(c.id IN (SELECT rowid FROM captions_fts WHERE captions_fts MATCH :match)"
            + (" OR (" + " AND ".join(name_terms) + ")" if name_terms else "")
            + ")"
        )
        params["match"] = match
    elif typed.strip():
        # Only punctuation or emoji: the FTS tokenizer drops them, so "no words" must not
        # mean "everything".  Look for the characters themselves.
        where.append("instr(c.text, :needle) > 0")
        params["needle"] = typed.strip()
    return " AND ".join(where)


def _like_escape(value: str) -> str:
    """*value* as a literal inside a ``LIKE ... ESCAPE '\\'`` pattern."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _order_sql(flt: ImageFilter) -> str:
    direction = "DESC" if flt.descending else "ASC"
    if flt.sort == "name":
        # The file name (what follows the last "/"), not the path: photos from different
        # folders interleave by name, as in a photo browser; the path breaks ties.
        base = "substr(i.rel_path, length(rtrim(i.rel_path, replace(i.rel_path, '/', ''))) + 1)"
        return f"{base} {direction}, i.root_id {direction}, i.rel_path {direction}"
    if flt.sort == "date":
        return f"i.mtime_ns {direction}, i.id {direction}"
    if flt.sort == "confidence":
        # Unscored (uncaptioned, human) rows go last in either direction.
        return f"c.score IS NULL, c.score {direction}, i.id {direction}"
    raise ValueError(f"unknown sort key {flt.sort!r}")


def _needs_captions(flt: ImageFilter) -> bool:
    return bool(
        flt.states or flt.model or flt.text.strip() or flt.min_score is not None
        or flt.max_score is not None or flt.sort == "confidence"
    )


def filtered_ids(session: Session, flt: ImageFilter) -> list[int]:
    """Ids of the images matching *flt*, in display order (the grid's whole content).

    Runs on the raw sqlite3 cursor: for 100 000 ids that is about half the time of
    going through SQLAlchemy's result machinery, and it holds the GIL less (the grid's
    worker thread shares it with the GUI thread).  The captions join is left out when
    the filter does not look at captions: the default view is then an index-only scan.
    """
    params: dict[str, Any] = {}
    where = filter_sql(flt, params)
    source = current_join(flt.kind) if _needs_captions(flt) else " FROM images i"
    sql = f"SELECT i.id{source} WHERE {where} ORDER BY {_order_sql(flt)}"
    cursor = session.connection().connection.driver_connection.execute(sql, params)
    return [row[0] for row in cursor]


def count_filtered(session: Session, flt: ImageFilter) -> int:
    params: dict[str, Any] = {}
    sql = f"SELECT count(*){current_join(flt.kind)} WHERE {filter_sql(flt, params)}"
    return int(session.execute(text(sql), params).scalar_one())


def least_confident(
    session: Session, flt: ImageFilter, *, after: tuple[float, int] | None = None
) -> int | None:
    """The image in *flt* whose current *model* caption has the lowest score.

    With *after* = ``(score, image_id)`` of the image being looked at: the next one in
    ascending-confidence order, so pressing "next least confident" repeatedly walks the
    review queue even when nothing is accepted on the way.
    """
    params: dict[str, Any] = {}
    where = filter_sql(flt, params)
    extra = ""
    if after is not None:
        extra = " AND (c.score > :after_score OR (c.score = :after_score AND i.id > :after_id))"
        params["after_score"], params["after_id"] = float(after[0]), int(after[1])
    sql = (
        f"SELECT i.id{current_join(flt.kind)} WHERE {where} AND {STATE_SQL['model']} AND c.score IS NOT NULL"
        f"{extra} ORDER BY c.score ASC, i.id ASC LIMIT 1"
    )
    return session.execute(text(sql), params).scalar()


def ids_in_state(session: Session, ids: Sequence[int], state: str, kind: str = CAPTION) -> set[int]:
    """Which of *ids* are in display state *state* of *kind* (for "next uncaptioned" and such)."""
    found: set[int] = set()
    for start in range(0, len(ids), IN_CHUNK):
        chunk = ",".join(str(int(x)) for x in ids[start : start + IN_CHUNK])
        sql = f"SELECT i.id{current_join(kind)} WHERE i.id IN ({chunk}) AND {STATE_SQL[state]}"
        found.update(session.execute(text(sql)).scalars())
    return found


def next_in_state(
    session: Session, ordered_ids: Sequence[int], start_row: int, state: str, *, step: int = 400,
    kind: str = CAPTION,
) -> int | None:
    """Row index of the first image after *start_row* in *ordered_ids* that is in *state*.

    Looks ahead in chunks, so the common case (the next one is near) costs one small
    query even on a 100 000-row grid; wraps around to the top once.
    """
    n = len(ordered_ids)
    if n == 0:
        return None
    order = list(range(start_row + 1, n)) + list(range(min(start_row + 1, n)))
    for begin in range(0, len(order), step):
        rows = order[begin : begin + step]
        hits = ids_in_state(session, [ordered_ids[r] for r in rows], state, kind)
        for r in rows:
            if ordered_ids[r] in hits:
                return r
    return None



def find_pattern(find: str, *, case_sensitive: bool = False) -> re.Pattern[str]:
    """The pattern find-and-replace looks for: *find* literally, letter case ignored
    unless *case_sensitive*.

    Not ``re.IGNORECASE``: it makes ``i``, ``I``, ``ı`` and ``İ`` one letter, so a search
    for "İ" would rewrite every "i".  Each letter matches only itself and its one-letter
    upper and lower case.
    """
    if case_sensitive:
        return re.compile(re.escape(find))
    parts = []
    for char in find:
        variants = sorted({v for v in (char, char.lower(), char.upper()) if len(v) == 1})
        if len(variants) == 1:
            parts.append(re.escape(char))
        else:
            parts.append("[" + "".join(re.escape(v) for v in variants) + "]")
    return re.compile("".join(parts))


def find_replace_candidates(
    session: Session, flt: ImageFilter, find: str, *, case_sensitive: bool = False
) -> list[tuple[int, int, str]]:
    """``(image_id, caption_id, text)`` of current captions in *flt* that contain *find*.

    SQL narrows the rows (``instr`` is case-sensitive, ``LIKE`` folds ASCII case) and
    Python's regex makes the final call with the same rule the replacement uses.
    """
    if not find:
        return []
    params: dict[str, Any] = {"find": find}
    where = filter_sql(flt, params)
    if case_sensitive:
        cond = "instr(c.text, :find) > 0"
    elif find.isascii():
        # LIKE folds exactly the ASCII letters, which is all an ASCII needle can match.
        cond = "c.text LIKE '%' || :like || '%' ESCAPE '\\'"
        params["like"] = _like_escape(find)
    else:
        cond = "1"  # non-ASCII case folding: leave it to Python below
    sql = (
        f"SELECT i.id, c.id, c.text{current_join(flt.kind)} WHERE {where} AND c.id IS NOT NULL AND {cond}"
        f" ORDER BY {_order_sql(flt)}"
    )
    pattern = find_pattern(find, case_sensitive=case_sensitive)
    return [
        (image_id, caption_id, caption)
        for image_id, caption_id, caption in session.execute(text(sql), params)
        if pattern.search(caption)
    ]
