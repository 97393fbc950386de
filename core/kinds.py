"""Caption kinds: the several values a photo can have (caption, alt text, title, keywords, …).

Every caption row has a ``kind`` (migration 0007); each (photo, kind) has at most one
current value with its own history, state and provenance, and a person's value of one
kind is never overwritten by a model or an import (:mod:`core.captions`).

* Built-in kinds (:data:`BUILTIN_KINDS`): ``caption`` (every caption written before kinds
  existed), ``alt_text``, ``extended_description``, ``title`` and ``keywords``.
* User-defined text kinds (e.g. "training prompt") are rows of ``caption_kinds`` in the
  library itself, so the CLI and the window of every machine see the same ones.
* Keywords are an ordered list; a keyword may be a hierarchy (``animals|dogs|terrier``).
  They are stored as one text value, one keyword a line and ``|`` between hierarchy
  levels: one text keeps full-text search, history, edits, undo and the person rule the
  same for every kind, a newline can never be part of a keyword, and ``|`` is the
  separator Lightroom's hierarchical keywords already use.

Nothing here imports torch or Qt; the presets named here live in
:mod:`core.captioning.presets`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy import text as sql_text
from sqlalchemy.orm import Session

from core.errors import UserFacingError
from core.models import CaptionKindRow

CAPTION = "caption"
ValueType = Literal["text", "keywords"]

#: Accessibility guidance: screen readers cut alt text around 125 characters …
ALT_TEXT_NOTE_CHARS = 125
#: … and past twice that it is a description, not alt text.
ALT_TEXT_WARNING_CHARS = 250

#: What a kind's name may be: it is written into SQL fragments (never user text inside
#: quotes), so the alphabet is closed.
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


class KindError(UserFacingError, ValueError):
    """A kind that cannot be used or defined (the message says why)."""


@dataclass(frozen=True)
class CaptionKind:
    """One kind of value a photo can have.

    Attributes:
        name: Stable identifier (``caption --kind``, the ``captions.kind`` column).
        label: As a person reads it.
        value_type: ``text``, or ``keywords`` (an ordered list, see the module docstring).
        preset: The preset a model is asked with by default (:mod:`core.captioning.presets`).
        prompt: A user kind's instruction to a prompted model (its default prompt; a
            template with the per-image variables of :mod:`core.captioning.presets`).
        builtin: Shipped with CaptionDesk (cannot be removed).
    """

    name: str
    label: str
    value_type: ValueType = "text"
    preset: str | None = None
    prompt: str | None = None
    builtin: bool = True


BUILTIN_KINDS: dict[str, CaptionKind] = {k.name: k for k in (
    CaptionKind(CAPTION, "Caption"),
    CaptionKind("alt_text", "Alt text", preset="alt_text"),
    CaptionKind("extended_description", "Extended description", preset="detailed"),
    CaptionKind("title", "Title", preset="title"),
    CaptionKind("keywords", "Keywords", value_type="keywords", preset="keywords"),
)}


def check_kind_name(name: str) -> str:
    """*name* if it can name a kind, else :class:`KindError`."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise KindError(f"{name!r} cannot name a caption kind: use 1-32 lower-case letters, digits "
                        "or _, starting with a letter")
    return name


def kind_sql(name: str) -> str:
    """*name* as an SQL string literal (safe: :func:`check_kind_name`'s alphabet has no quote)."""
    return f"'{check_kind_name(name)}'"


def all_kinds(session: Session) -> dict[str, CaptionKind]:
    """The built-in kinds, then the library's own, by name."""
    kinds = dict(BUILTIN_KINDS)
    for row in session.scalars(select(CaptionKindRow).order_by(CaptionKindRow.created_at, CaptionKindRow.name)):
        kinds[row.name] = CaptionKind(row.name, row.label, row.value_type, None, row.prompt, builtin=False)  # type: ignore[arg-type]
    return kinds


def get_kind(session: Session, name: str) -> CaptionKind:
    """The kind called *name*; :class:`KindError` naming the known ones if there is none."""
    if name in BUILTIN_KINDS:
        return BUILTIN_KINDS[name]
    kinds = all_kinds(session)
    if name not in kinds:
        raise KindError(f"no caption kind {name!r}; kinds: {', '.join(kinds)}")
    return kinds[name]


def add_kind(session: Session, name: str, label: str, *, prompt: str | None = None) -> CaptionKind:
    """Define a user text kind (e.g. ``training_prompt``) in the library."""
    check_kind_name(name)
    if name in all_kinds(session):
        raise KindError(f"the caption kind {name!r} exists already")
    label = " ".join(label.split())
    if not label:
        raise KindError("a caption kind needs a label")
    prompt = prompt.strip() if prompt and prompt.strip() else None
    if prompt is not None:
        from core.captioning.presets import template_variables

        try:
            template_variables(prompt)
        except ValueError as exc:
            raise KindError(str(exc)) from None
    session.add(CaptionKindRow(name=name, label=label, value_type="text", prompt=prompt))
    session.flush()
    return CaptionKind(name, label, "text", None, prompt, builtin=False)


def remove_kind(session: Session, name: str) -> None:
    """Forget a user kind that no caption row uses (values are never deleted with it)."""
    from core.models import Caption

    kind = get_kind(session, name)
    if kind.builtin:
        raise KindError(f"{name!r} is built in and cannot be removed")
    if session.scalar(select(Caption.id).where(Caption.kind == name).limit(1)) is not None:
        raise KindError(f"photos have {kind.label!r} values; the kind is kept so they stay readable")
    session.delete(session.get(CaptionKindRow, name))
    session.flush()


# -- keywords ----------------------------------------------------------------------------

Keyword = tuple[str, ...]

_LIST_MARK = re.compile(r"^\s*(?:[-*•·–—+>]+|\d{1,3}[.):]|\(\d{1,3}\)|[a-z][.)](?=\s))\s*", re.IGNORECASE)
_LEAD_IN = re.compile(r"^\s*(?:(?:here\s+(?:are|is)\b[^:\n]*|(?:suggested\s+)?(?:keywords?|tags?)(?:\s+list)?)\s*:)\s*",
                      re.IGNORECASE)
_EDGE = re.compile(r"^[\s\"'`“”‘’*_#\[\](){}.,;:!?]+|[\s\"'`“”‘’*_#\[\](){}.,;:!?]+$")


def _keyword(raw: str) -> Keyword | None:
    levels = []
    for part in raw.split("|"):
        word = _EDGE.sub("", unicodedata.normalize("NFC", part))
        word = re.sub(r"^(?:and|or)\s+", "", " ".join(word.split()), flags=re.IGNORECASE)
        if word:
            levels.append(word.lower())
    return tuple(levels) or None


def _items(text: str) -> Iterable[str]:
    stripped = text.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            data = json.loads(stripped)
        except ValueError:
            data = None
        if isinstance(data, list):
            yield from (str(item) for item in data if isinstance(item, str | int | float))
            return
    text = _LEAD_IN.sub("", stripped)
    for line in text.splitlines():
        line = _LEAD_IN.sub("", _LIST_MARK.sub("", line))
        if not line.strip():
            continue
        separators = r"[,;\t]" if re.search(r"[,;\t]", line) else None
        parts = re.split(separators, line) if separators else [line]
        for part in parts:
            # Hashtag lists ("#beach #sunset") name one keyword a tag.
            if part.count("#") > 1 and "|" not in part:
                yield from (tag for tag in part.split("#") if tag.strip())
            else:
                yield part


def parse_keywords(text: str) -> list[Keyword]:
    """The keywords a model's (or a person's) text lists, in order, each once.

    Takes comma, semicolon, tab or line lists, bullets and numbering, a JSON list, hashtags,
    a lead-in ("Keywords:", "Here are some keywords for this image:"), quotes and
    markdown emphasis; normalizes Unicode, whitespace and case (lower); ``a|b`` is a
    hierarchy.  Two spellings of one keyword (``Beach``, `` beach ``) count once.
    """
    seen: set[Keyword] = set()
    out: list[Keyword] = []
    for raw in _items(text):
        keyword = _keyword(raw)
        if keyword is None or keyword in seen:
            continue
        seen.add(keyword)
        out.append(keyword)
    return out


_KEYWORD_TERM = re.compile(r'(?<!\S)keywords?:(?:"([^"]*)"|(\S+))', re.IGNORECASE)


def keyword_terms(text: str) -> tuple[str, list[str]]:
    """``(the rest of text, the keywords its terms ask for)``: search text's ``keyword:beach``
    (or ``keyword:"sandy beach"``, ``keyword:places|beach``) asks for photos with that keyword,
    normalized as stored (lower case, ``|`` between hierarchy levels)."""
    wanted: list[str] = []
    for match in _KEYWORD_TERM.finditer(text):
        keyword = _keyword(match.group(1) if match.group(1) is not None else match.group(2))
        if keyword is not None:
            wanted.append("|".join(keyword))
    return " ".join(_KEYWORD_TERM.sub(" ", text).split()), wanted


def format_keywords(keywords: Iterable[Keyword]) -> str:
    """The stored text of *keywords*: one a line, ``|`` between hierarchy levels."""
    return "\n".join("|".join(k) for k in keywords)


def keyword_vocabulary(session: Session, limit: int = 5000) -> list[str]:
    """The library's keywords as stored (``a|b``), the most used first: what the keyword
    editor completes from.  Every level of a hierarchy is offered too (``a`` for ``a|b``)."""
    counts: dict[str, int] = {}
    rows = session.execute(sql_text("SELECT text FROM captions WHERE kind = 'keywords' AND is_current = 1"))
    for (value,) in rows:
        for line in value.splitlines():
            levels = line.split("|")
            for depth in range(1, len(levels) + 1):
                word = "|".join(levels[:depth])
                counts[word] = counts.get(word, 0) + 1
    return sorted(counts, key=lambda w: (-counts[w], w))[:limit]


# -- values of a kind --------------------------------------------------------------------


@dataclass(frozen=True)
class LengthCheck:
    """A stored value longer than its kind advises: ``level`` is ``note`` or ``warning``."""

    level: Literal["note", "warning"]
    message: str


def length_check(kind: str, text: str) -> LengthCheck | None:
    """Alt text over :data:`ALT_TEXT_NOTE_CHARS` gets a note, over
    :data:`ALT_TEXT_WARNING_CHARS` a warning; other kinds have no advised length."""
    if kind != "alt_text" or len(text) <= ALT_TEXT_NOTE_CHARS:
        return None
    if len(text) > ALT_TEXT_WARNING_CHARS:
        return LengthCheck("warning", f"alt text of {len(text)} characters: over {ALT_TEXT_WARNING_CHARS} "
                                      "it reads as a description; screen readers cut it short")
    return LengthCheck("note", f"alt text of {len(text)} characters: screen readers may cut it "
                               f"after {ALT_TEXT_NOTE_CHARS}")


def normalize_value(kind: CaptionKind, text: str) -> str:
    """The value stored for *text* written as *kind*: keywords parsed and written one a
    line; other kinds stripped."""
    if kind.value_type == "keywords":
        return format_keywords(parse_keywords(text))
    return text.strip()
