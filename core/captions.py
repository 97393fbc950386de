"""Writing and reading captions with their provenance.

Rules every caller gets for free:

* Every caption ever written stays in the history; one row per image is current.
* A human caption is never replaced by a model or an import.  Such a caption is still
  stored (the GUI shows the model's words beside the person's) but not made current.
  A database trigger backs this up.
* A person's edit, an "accept" and a revert all write a new human row that points at
  the row it came from (``parent_id``), so the history reads as what happened.

All functions take an open :class:`~sqlalchemy.orm.Session` (from ``Database.write``);
the caller commits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.models import Caption, CaptionSource


class CaptionError(Exception):
    """A caption edit that cannot be done (the message says why).

    About stored captions only; a model failing to caption a batch raises
    :class:`core.captioning.errors.GenerationError` instead.
    """


def current_caption(session: Session, image_id: int) -> Caption | None:
    return session.scalar(
        select(Caption).where(Caption.image_id == image_id, Caption.is_current.is_(True))
    )


def caption_history(session: Session, image_id: int) -> list[Caption]:
    """All captions of an image, oldest first."""
    return list(
        session.scalars(select(Caption).where(Caption.image_id == image_id).order_by(Caption.id))
    )


def _make_current(session: Session, image_id: int, caption: Caption) -> None:
    session.execute(
        update(Caption)
        .where(Caption.image_id == image_id, Caption.is_current.is_(True))
        .values(is_current=False)
    )
    caption.is_current = True
    session.add(caption)
    session.flush()


def _store_unless_human_current(session: Session, image_id: int, caption: Caption) -> Caption:
    """Make *caption* current, or file it as history when a person's caption is current."""
    current = current_caption(session, image_id)
    if current is not None and current.source == CaptionSource.HUMAN:
        session.add(caption)
        session.flush()
        return caption
    _make_current(session, image_id, caption)
    return caption


def add_model_caption(
    session: Session,
    image_id: int,
    text: str,
    *,
    model_name: str,
    adapter: str | None = None,
    model_version_id: int | None = None,
    settings: Mapping[str, Any] | None = None,
    score: float | None = None,
) -> Caption:
    """Store a model's caption; it becomes current unless a human caption is current.

    An empty (or blank) text is refused with :class:`CaptionError`: a model that
    generated nothing failed on that image, and must not replace a caption with "".
    """
    if not text or not text.strip():
        raise CaptionError("the model generated an empty caption")
    caption = Caption(
        image_id=image_id,
        text=text,
        source=CaptionSource.MODEL.value,
        is_current=False,
        model_name=model_name,
        adapter=adapter,
        model_version_id=model_version_id,
        settings=dict(settings) if settings is not None else None,
        score=score,
    )
    return _store_unless_human_current(session, image_id, caption)


def add_import_caption(
    session: Session,
    image_id: int,
    text: str,
    *,
    origin: str,
    details: Mapping[str, Any] | None = None,
    verified: bool = False,
) -> Caption:
    """Store an imported caption.

    With *verified* the import stands for a person's words (a hand-written dataset) and
    is stored as a human caption with the import as its origin; it still never replaces
    a human caption that is already current.
    """
    caption = Caption(
        image_id=image_id,
        text=text,
        source=(CaptionSource.HUMAN if verified else CaptionSource.IMPORT).value,
        is_current=False,
        origin=origin,
        settings=dict(details) if details is not None else None,
    )
    return _store_unless_human_current(session, image_id, caption)


def set_human_caption(
    session: Session, image_id: int, text: str, *, parent_id: int | None = None
) -> Caption:
    """A person wrote or corrected the caption: it becomes current."""
    text = text.strip()
    if not text:
        raise CaptionError("a caption cannot be empty")
    if parent_id is None:
        current = current_caption(session, image_id)
        parent_id = current.id if current is not None else None
    caption = Caption(
        image_id=image_id,
        text=text,
        source=CaptionSource.HUMAN.value,
        is_current=False,
        parent_id=parent_id,
    )
    _make_current(session, image_id, caption)
    return caption


def accept_caption(session: Session, image_id: int) -> Caption:
    """Mark the current caption as verified by a person (no-op if it already is)."""
    current = current_caption(session, image_id)
    if current is None:
        raise CaptionError("this image has no caption to accept")
    if current.source == CaptionSource.HUMAN:
        return current
    return set_human_caption(session, image_id, current.text, parent_id=current.id)


def revert_to(session: Session, caption_id: int) -> Caption:
    """Make an earlier caption's text current again, as the person's choice."""
    old = session.get(Caption, caption_id)
    if old is None:
        raise CaptionError(f"no caption with id {caption_id}")
    return set_human_caption(session, old.image_id, old.text, parent_id=old.id)


class StaleCaptionError(CaptionError):
    """An undo/redo found a different caption current than the one it expected."""


def repoint_current(session: Session, image_id: int, *, expected: int | None, target: int | None) -> None:
    """Undo/redo of a caption change: make *target* current again (None: no caption).

    Writes no caption row: undoing an edit of a model caption brings back the *model*
    caption itself (unverified, with its score), not a person's copy of its words.

    The protection of a person's caption holds here too: the current caption is moved
    only while it is still *expected* — the caption the change being undone or redone
    produced.  So a person's caption can be set aside only by undoing or redoing that
    very step; one written since (in another window, by find-and-replace, ...) makes the
    step stale and nothing is written (:class:`StaleCaptionError`).
    """
    current = session.scalar(
        select(Caption.id).where(Caption.image_id == image_id, Caption.is_current.is_(True))
    )
    if current != expected:
        raise StaleCaptionError(
            f"the caption of image {image_id} was changed since; "
            "this step can no longer be undone or redone"
        )
    if target == current:
        return
    # Clear first: the database trigger refuses to make a model caption current beside a
    # current human one, and the partial unique index allows one current row per image.
    session.execute(
        update(Caption)
        .where(Caption.image_id == image_id, Caption.is_current.is_(True))
        .values(is_current=False)
    )
    if target is not None:
        result = session.execute(
            update(Caption)
            .where(Caption.id == target, Caption.image_id == image_id)
            .values(is_current=True)
        )
        if result.rowcount != 1:
            raise StaleCaptionError("that caption no longer exists")
