"""Undoable caption edits: each one a short write transaction over :mod:`core.captions`.

Every operation is one short write transaction (``library.db.write()``) and returns a
:class:`Change` — which caption was current before and which is after — so the GUI's
undo stack can move between the two without writing new rows.  No Qt here.

Why undo *re-points* ``is_current`` instead of writing another caption: undoing an edit
of a model caption must bring back the *model* caption (unverified, with its score),
not a human copy of its words; and the history stays an honest, append-only record of
what was written.  The re-pointing itself is :func:`core.captions.repoint_current`,
which moves the current caption only while the caption the change produced is still
current, so an undo never clobbers a newer edit (made in another window, by
find-and-replace, ...) and never sets aside a person's caption it did not write.

Every edit works on one caption kind (:mod:`core.kinds`; ``caption`` unless told): each
kind's current value, history and undo are its own, and :class:`Change` records the kind.

Used by the GUI's undo stack; nothing here imports Qt.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from core.captions import (
    CaptionError,
    StaleCaptionError,
    accept_caption,
    caption_too_long,
    current_caption,
    replace_caption_text,
    repoint_current,
    revert_to,
    set_human_caption,
)
from core.db import Database
from core.kinds import CAPTION, get_kind, normalize_value
from core.models import Caption
from core.queries import find_pattern

__all__ = [
    "CaptionError",
    "Change",
    "StaleChangeError",
    "accept",
    "accept_many",
    "apply_changes",
    "replace_captions",
    "replacement_preview",
    "revert",
    "save_edit",
    "unverify",
]


#: An undo/redo found a different caption current than the one it expected.
StaleChangeError = StaleCaptionError


@dataclass(frozen=True)
class Change:
    """One image's current value of ``kind`` moved from ``before`` to ``after`` (caption ids)."""

    image_id: int
    before: int | None
    after: int | None
    kind: str = CAPTION


def _current_id(session: Session, image_id: int, kind: str = CAPTION) -> int | None:
    current = current_caption(session, image_id, kind)
    return current.id if current is not None else None


def save_edit(db: Database, image_id: int, text: str, kind: str = CAPTION) -> Change | None:
    """A person's text of *kind* for *image_id*; None when it changes nothing.

    Saving the same words as a *model* caption is a real change (it verifies the
    caption), so only an identical *human* caption is a no-op.
    """
    with db.write() as session:
        current = current_caption(session, image_id, kind)
        before = current.id if current is not None else None
        # Compared as the kind stores it (keywords normalized, text stripped).
        if current is not None and current.source == "human" and current.text == normalize_value(
            get_kind(session, kind), text
        ):
            return None
        caption = set_human_caption(session, image_id, text, kind=kind)
        return Change(image_id, before, caption.id, kind)


def accept(db: Database, image_id: int, kind: str = CAPTION) -> Change | None:
    """Mark the current value of *kind* verified; None when it already is."""
    with db.write() as session:
        before = _current_id(session, image_id, kind)
        caption = accept_caption(session, image_id, kind)
        if caption.id == before:
            return None
        return Change(image_id, before, caption.id, kind)


def accept_many(db: Database, image_ids: Iterable[int], kind: str = CAPTION) -> list[Change]:
    """Verify the current value of *kind* of each image, in one transaction.

    An image without a value of that kind, or whose value a person already wrote, is
    skipped; the changes are one undo step.
    """
    changes: list[Change] = []
    with db.write() as session:
        for image_id in image_ids:
            current = current_caption(session, image_id, kind)
            if current is None or current.source == "human":
                continue
            caption = accept_caption(session, image_id, kind)
            changes.append(Change(image_id, current.id, caption.id, kind))
    return changes


def unverify(db: Database, image_ids: Iterable[int], kind: str = CAPTION) -> list[Change]:
    """Take back an acceptance: the model's (or import's) caption a person accepted becomes current again.

    Only a person's caption that is an acceptance — the same words as the unreviewed
    caption it was made from — is set aside; words a person wrote or edited are theirs
    and stay (the human-caption rule).  The acceptance row stays in history.
    """
    changes: list[Change] = []
    with db.write() as session:
        for image_id in image_ids:
            current = current_caption(session, image_id, kind)
            if current is None or current.source != "human" or current.parent_id is None:
                continue
            parent = session.get(Caption, current.parent_id)
            if parent is None or parent.source == "human" or parent.text != current.text:
                continue
            repoint_current(session, image_id, expected=current.id, target=parent.id, kind=kind)
            changes.append(Change(image_id, current.id, parent.id, kind))
    return changes


def revert(db: Database, caption_id: int) -> Change:
    """Make an earlier caption's words current again (as the person's choice)."""
    with db.write() as session:
        old = session.get(Caption, caption_id)
        if old is None:
            raise CaptionError(f"no caption with id {caption_id}")
        before = _current_id(session, old.image_id, old.kind)
        caption = revert_to(session, caption_id)
        return Change(old.image_id, before, caption.id, old.kind)


def apply_changes(db: Database, changes: Sequence[Change], *, undo: bool) -> None:
    """Move each image's current caption back to ``before`` (undo) or to ``after`` (redo).

    All or nothing, in one transaction: if any image's current caption is no longer
    the one the change expects, nothing is written and :class:`StaleChangeError`
    says which image.
    """
    with db.write() as session:
        for change in changes:
            expected, target = (change.after, change.before) if undo else (change.before, change.after)
            repoint_current(session, change.image_id, expected=expected, target=target, kind=change.kind)


def _replacer(find: str, replacement: str, *, case_sensitive: bool):
    """The one rule of find-and-replace: the pattern the candidates were found with."""
    pattern = find_pattern(find, case_sensitive=case_sensitive)
    return lambda text: pattern.sub(lambda _m: replacement, text).strip()


def replacement_preview(
    candidates: Iterable[tuple[int, int, str]], find: str, replacement: str, *, case_sensitive: bool = False
) -> list[tuple[int, str, str]]:
    """``(image_id, old_text, new_text)`` for each candidate that the replacement would change.

    What "Replace all" would write, computed with the same rule, so the dialog can show
    the count and examples before anything is written.
    """
    replace = _replacer(find, replacement, case_sensitive=case_sensitive)
    preview = []
    for image_id, _caption_id, old_text in candidates:
        new_text = replace(old_text)
        if new_text and new_text != old_text:
            preview.append((image_id, old_text, new_text))
    return preview


def replace_captions(
    db: Database,
    candidates: Iterable[tuple[int, int, str]],
    find: str,
    replacement: str,
    *,
    case_sensitive: bool = False,
    verified: bool = False,
    kind: str = CAPTION,
) -> list[Change]:
    """Replace *find* in each candidate ``(image_id, caption_id, text)`` of *kind*
    (:func:`core.queries.find_replace_candidates` with that kind's filter); one transaction.

    A candidate whose current caption changed after it was listed is skipped, never
    overwritten.  Replacing to an empty caption, or one over the caption length limit, is
    skipped too (no caption can be stored so).  A replaced model or import caption stays unreviewed (same source and
    score, the replacement recorded in its settings) unless *verified*; a person's
    caption stays a person's.  See :func:`core.captions.replace_caption_text`.  The candidates
    are values of *kind* (:func:`core.queries.find_replace_candidates` of a filter of that kind).
    """
    replace = _replacer(find, replacement, case_sensitive=case_sensitive)
    changes: list[Change] = []
    with db.write() as session:
        for image_id, caption_id, old_text in candidates:
            new_text = replace(old_text)
            if not new_text or new_text == old_text or caption_too_long(new_text.strip()) is not None:
                continue
            current = current_caption(session, image_id, kind)
            if current is None or current.id != caption_id:
                continue
            caption = replace_caption_text(
                session, current, new_text, find=find, replacement=replacement, verified=verified
            )
            changes.append(Change(image_id, caption_id, caption.id, kind))
    return changes
