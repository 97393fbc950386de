"""The caption kinds in an export: one column per kind, a kind's value as a caption file, templates.

* csv, parquet and imagefolder carry one column per kind other than ``caption`` (which is
  ``text``; :func:`column_name`), :func:`current_values` fetches each image's
  values for a chunk of images in one query.  Keywords are written as one ``a, b|c`` line
  (:func:`export_value`), as a trainer's caption and the ``{keywords}`` of a prompt read them.
  Imported, those columns come back as values of their kinds (:func:`imported_kind_groups`).
* sidecar and kohya write one text per image: the value of ``--kind K``, or a template such
  as ``"{keywords}, {caption}"`` (:func:`render_template`, fields checked by
  :func:`template_fields` before anything is written).
"""

from __future__ import annotations

import re
import string
from collections.abc import Collection, Sequence

from sqlalchemy import select

from core.datasets.errors import ExportError
from core.datasets.readers.base import CaptionGroup
from core.db import Database
from core.kinds import CAPTION
from core.models import Caption

__all__ = ["column_name", "current_values", "export_value", "imported_kind_groups", "render_template",
           "template_fields"]

#: Columns the formats write whatever the kinds: a kind of the same name gets ``kind_`` before it.
FIXED_COLUMNS = frozenset({
    "image", "file_name", "text", "split", "source", "model_name", "adapter", "origin", "score",
    "caption_created_at", "fingerprint", "library_path",
})


def column_name(kind: str) -> str:
    """The column *kind*'s values go in (never one of :data:`FIXED_COLUMNS`)."""
    return f"kind_{kind}" if kind in FIXED_COLUMNS else kind


def export_value(kind: str, stored: str) -> str:
    """A stored value as a dataset carries it: keywords (stored one a line) as ``a, b|c``."""
    if kind == "keywords":
        return ", ".join(line.strip() for line in stored.splitlines() if line.strip())
    return stored.strip()


def imported_kind_groups(group: CaptionGroup, kinds: Collection[str]) -> list[CaptionGroup]:
    """The values of the library's *kinds* a table row carries in its kind columns
    (:func:`column_name`), one group each, for the same photo as the row's caption.

    The row's ``source`` column is its caption's: a kind value is a person's only when the
    import says so (``--verified``).
    """
    found = []
    for kind in kinds:
        column = column_name(kind)
        value = group.columns.get(column, "")
        if kind != CAPTION and value.strip():
            found.append(CaptionGroup(group.name, [value], group.origin, image_file=group.image_file,
                                      details={"column": column}, kind=kind))
    return found


def current_values(db: Database, image_ids: Collection[int], kinds: Collection[str]) -> dict[int, dict[str, str]]:
    """``{image id: {kind: value}}``: the current values of *kinds* of *image_ids*, in one read."""
    if not image_ids or not kinds:
        return {}
    query = select(Caption.image_id, Caption.kind, Caption.text).where(
        Caption.image_id.in_(sorted(image_ids)), Caption.kind.in_(sorted(kinds)), Caption.is_current.is_(True))
    values: dict[int, dict[str, str]] = {}
    with db.read() as session:
        for image_id, kind, text in session.execute(query):
            value = export_value(kind, text)
            if value:
                values.setdefault(image_id, {})[kind] = value
    return values


def template_fields(template: str, kinds: Sequence[str]) -> list[str]:
    """The kinds *template* names, in order; :class:`ExportError` for a field that is no kind
    of this library, a format spec or a template that names none."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ExportError(f"--template {template!r}: {exc} (write a literal brace as {{{{ or }}}})") from None
    fields: list[str] = []
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in kinds:
            raise ExportError(f"--template names {{{field}}}, which is no caption kind of this library; "
                              f"fields: {', '.join('{' + k + '}' for k in kinds)}")
        if spec or conversion:
            raise ExportError(f"--template: write {{{field}}} without a format or conversion")
        if field not in fields:
            fields.append(field)
    if not fields:
        raise ExportError("--template names no caption kind, e.g. \"{keywords}, {caption}\"")
    return fields


#: Separators left doubled or at an end by a kind an image has no value of.
_EMPTY_JOINS = re.compile(r"(?:\s*[,;:|]\s*)+(?=[,;:|])")
_EDGES = re.compile(r"^[\s,;:|]+|[\s,;:|]+$")


def render_template(template: str, values: dict[str, str]) -> str:
    """*template* with each ``{kind}`` replaced by its value; an image without a value of a
    kind gets the separators around it dropped (``"{keywords}, {caption}"`` → the caption
    alone), not a dangling ``", "``."""
    text = template.format_map(_Missing(values))
    text = " ".join(text.split())
    return _EDGES.sub("", _EMPTY_JOINS.sub("", text))


class _Missing(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""
