"""Write-side caption operations for the GUI, on top of :mod:`core.captions`.

Every operation is one short write transaction (``library.db.write()``) and returns a
:class:`Change` — which caption was current before and which is after — so the GUI's
undo stack can move between the two without writing new rows.  No Qt here.

Why undo *re-points* ``is_current`` instead of writing another caption: undoing an edit
of a model caption must bring back the *model* caption (unverified, with its score),
not a human copy of its words; and the history stays an honest, append-only record of
what was written.  Re-pointing is guarded: it only happens while the caption the
change produced is still current, so an undo never clobbers a newer edit (made in
another window, by find-and-replace, ...).  Going back to a model caption when a
person's caption is current is allowed only here, as the person's own undo; the
database trigger that protects human captions is respected by clearing the current
row before the older one is made current.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.captions import (
    CaptionError,
    accept_caption,
    current_caption,
    revert_to,
    set_human_caption,
)
from core.db import Database
from core.models import Caption
from core.queries import find_pattern

__all__ = [
    "CaptionError",
    "Change",
    "StaleChangeError",
    "accept",
    "apply_changes",
    "replace_captions",
    "revert",
    "save_edit",
]


class StaleChangeError(CaptionError):
    """An undo/redo found a different caption current than the one it expected."""


@dataclass(frozen=True)
class Change:
    """One image's current caption moved from ``before`` to ``after`` (caption ids)."""

    image_id: int
    before: int | None
    after: int | None


def _current_id(session: Session, image_id: int) -> int | None:
    current = current_caption(session, image_id)
    return current.id if current is not None else None


def save_edit(db: Database, image_id: int, text: str) -> Change | None:
    """A person's text for *image_id*; None when it changes nothing.

    Saving the same words as a *model* caption is a real change (it verifies the
    caption), so only an identical *human* caption is a no-op.
    """
    with db.write() as session:
        current = current_caption(session, image_id)
        before = current.id if current is not None else None
        if current is not None and current.source == "human" and current.text == text.strip():
            return None
        caption = set_human_caption(session, image_id, text)
        return Change(image_id, before, caption.id)


def accept(db: Database, image_id: int) -> Change | None:
    """Mark the current caption verified; None when it already is."""
    with db.write() as session:
        before = _current_id(session, image_id)
        caption = accept_caption(session, image_id)
        if caption.id == before:
            return None
        return Change(image_id, before, caption.id)


def revert(db: Database, caption_id: int) -> Change:
    """Make an earlier caption's words current again (as the person's choice)."""
    with db.write() as session:
        old = session.get(Caption, caption_id)
        if old is None:
            raise CaptionError(f"no caption with id {caption_id}")
        before = _current_id(session, old.image_id)
        caption = revert_to(session, caption_id)
        return Change(old.image_id, before, caption.id)


def _set_current(session: Session, image_id: int, caption_id: int | None) -> None:
    # Clear first: the trigger refuses a model caption while a human one is current,
    # and the partial unique index allows one current row per image.
    session.execute(
        update(Caption)
        .where(Caption.image_id == image_id, Caption.is_current.is_(True))
        .values(is_current=False)
    )
    if caption_id is not None:
        result = session.execute(
            update(Caption)
            .where(Caption.id == caption_id, Caption.image_id == image_id)
            .values(is_current=True)
        )
        if result.rowcount != 1:
            raise StaleChangeError("that caption no longer exists")


def apply_changes(db: Database, changes: Sequence[Change], *, undo: bool) -> None:
    """Move each image's current caption back to ``before`` (undo) or to ``after`` (redo).

    All or nothing, in one transaction: if any image's current caption is no longer
    the one the change expects, nothing is written and :class:`StaleChangeError`
    says which image.
    """
    with db.write() as session:
        ids = [c.image_id for c in changes]
        current: dict[int, int] = {}
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            rows = session.execute(
                select(Caption.image_id, Caption.id).where(
                    Caption.image_id.in_(chunk), Caption.is_current.is_(True)
                )
            )
            current.update((image_id, caption_id) for image_id, caption_id in rows)
        for change in changes:
            expected, target = (change.after, change.before) if undo else (change.before, change.after)
            if current.get(change.image_id) != expected:
                raise StaleChangeError(
                    f"the caption of image {change.image_id} was changed since; "
                    "this step can no longer be undone or redone"
                )
            _set_current(session, change.image_id, target)


def replace_captions(
    db: Database,
    candidates: Iterable[tuple[int, int, str]],
    find: str,
    replacement: str,
    *,
    case_sensitive: bool = False,
) -> list[Change]:
    """Replace *find* in each candidate ``(image_id, caption_id, text)``; one transaction.

    A candidate whose current caption changed after it was listed is skipped, never
    overwritten.  Replacing to an empty caption is skipped too (a caption cannot be
    empty).  The new captions are the person's (verified) with the old row as parent.
    """
    pattern = find_pattern(find, case_sensitive=case_sensitive)  # the rule the candidates were found with
    changes: list[Change] = []
    with db.write() as session:
        for image_id, caption_id, old_text in candidates:
            new_text = pattern.sub(lambda _m: replacement, old_text).strip()
            if not new_text or new_text == old_text:
                continue
            current = current_caption(session, image_id)
            if current is None or current.id != caption_id:
                continue
            caption = set_human_caption(session, image_id, new_text, parent_id=caption_id)
            changes.append(Change(image_id, caption_id, caption.id))
    return changes
