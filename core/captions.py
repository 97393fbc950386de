"""Writing and reading captions with their provenance.

Rules every caller gets for free:

* Every caption ever written stays in the history; one row per (image, kind) is current.
  Every function takes the caption ``kind`` (:mod:`core.kinds`; ``caption`` by default),
  and each kind keeps its own current value, history and state.
* A human caption is never replaced by a model or an import (per kind: a person's alt
  text does not stop a model writing the caption).  Such a caption is still
  stored (the GUI shows the model's words beside the person's) but not made current.
  A database trigger backs this up.
* A caption belongs to the picture it describes.  When a scan finds another picture at
  the same path (:mod:`core.scanner`), the current value of every kind — a person's
  too — stops being current: its text is neither deleted nor edited, it stays in the
  history (restore it with a revert if it still fits), and the image is *changed since
  captioned* until any caption is current again, so the next caption run may write one.
* A person's edit, an "accept" and a revert all write a new human row that points at
  the row it came from (``parent_id``), so the history reads as what happened.
* A bulk find-and-replace does not verify anything by itself: a replaced model or
  import caption keeps its source (it stays unreviewed, out of training data) and its
  provenance records the replacement (``Provenance.bulk_replace``); only when the person
  asks for it does the replaced text become a human (verified) caption.

Confidence: a model caption's ``score`` is its mean token log-probability (<= 0).  People
see :func:`confidence_percent` = ``exp(score)`` as a percentage (the geometric mean of the
per-token probabilities), which orders captions exactly as the score does.

All functions take an open :class:`~sqlalchemy.orm.Session` (from ``Database.write``);
the caller commits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.kinds import BUILTIN_KINDS, CAPTION, get_kind, normalize_value
from core.models import Caption, CaptionSource
from core.provenance import BulkReplace, Provenance, as_provenance

#: The longest caption any path stores (editor, import, find-and-replace, model, server):
#: one limit, so whatever the library exports imports again.
MAX_CAPTION_CHARS = 64 * 1024
#: The default of the caption job setting that bounds a model's caption (local or server),
#: ``CaptionJobSpec.max_caption_chars``; it can be raised up to :data:`MAX_CAPTION_CHARS`.
DEFAULT_MODEL_CAPTION_CHARS = 4000


class CaptionError(Exception):
    """A caption edit that cannot be done (the message says why).

    About stored captions only; a model failing to caption a batch raises
    :class:`core.captioning.errors.GenerationError` instead.
    """


def caption_too_long(text: str, limit: int = MAX_CAPTION_CHARS) -> str | None:
    """Why *text* cannot be stored as a caption (longer than *limit*), else None."""
    if len(text) <= limit:
        return None
    return f"the caption has {len(text):,} characters, more than the limit of {limit:,}; not stored"


def _check_length(text: str) -> None:
    problem = caption_too_long(text)
    if problem is not None:
        raise CaptionError(problem)


def _value(session: Session, kind: str, text: str) -> str:
    """*text* as *kind* stores it (keywords one a line, normalized); KindError for an unknown kind."""
    spec = BUILTIN_KINDS.get(kind) or get_kind(session, kind)
    return normalize_value(spec, text) if spec.value_type == "keywords" else text


def current_caption(session: Session, image_id: int, kind: str = CAPTION) -> Caption | None:
    return session.scalar(
        select(Caption).where(Caption.image_id == image_id, Caption.kind == kind, Caption.is_current.is_(True))
    )


def caption_history(session: Session, image_id: int, kind: str | None = CAPTION) -> list[Caption]:
    """The captions of one *kind* of an image (None: of every kind), oldest first."""
    query = select(Caption).where(Caption.image_id == image_id)
    if kind is not None:
        query = query.where(Caption.kind == kind)
    return list(session.scalars(query.order_by(Caption.id)))


def _make_current(session: Session, image_id: int, caption: Caption) -> None:
    session.execute(
        update(Caption)
        .where(Caption.image_id == image_id, Caption.kind == caption.kind, Caption.is_current.is_(True))
        .values(is_current=False)
    )
    caption.is_current = True
    session.add(caption)
    session.flush()


def _store_unless_human_current(session: Session, image_id: int, caption: Caption) -> Caption:
    """Make *caption* current, or file it as history when a person's value of its kind is current."""
    current = current_caption(session, image_id, caption.kind)
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
    provenance: Provenance | Mapping[str, Any] | None = None,
    score: float | None = None,
    kind: str = CAPTION,
) -> Caption:
    """Store a model's value of *kind*; it becomes current unless a person's one is current.

    An empty (or blank) text is refused with :class:`CaptionError`: a model that
    generated nothing failed on that image, and must not replace a caption with "".
    """
    text = _value(session, kind, text) if text else text
    if not text or not text.strip():
        raise CaptionError("the model generated an empty caption")
    _check_length(text)
    caption = Caption(
        image_id=image_id,
        kind=kind,
        text=text,
        source=CaptionSource.MODEL.value,
        is_current=False,
        model_name=model_name,
        adapter=adapter,
        model_version_id=model_version_id,
        provenance=as_provenance(provenance),
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
    replace: bool = False,
    kind: str = CAPTION,
) -> Caption:
    """Store an imported caption.

    With *verified* the import stands for a person's words (a hand-written dataset) and
    is stored as a human caption with the import as its origin; it still never replaces
    a human caption that is already current, unless the user asked to *replace* it (a
    person's own edit made in another tool): then it becomes current as an edit of the
    replaced caption, which stays in the history.
    """
    text = _value(session, kind, text)
    _check_length(text)
    caption = Caption(
        image_id=image_id,
        kind=kind,
        text=text,
        source=(CaptionSource.HUMAN if verified else CaptionSource.IMPORT).value,
        is_current=False,
        origin=origin,
        provenance=as_provenance(details),
    )
    if replace and verified:
        current = current_caption(session, image_id, kind)
        caption.parent_id = current.id if current is not None else None
        _make_current(session, image_id, caption)
        return caption
    return _store_unless_human_current(session, image_id, caption)


def set_human_caption(
    session: Session, image_id: int, text: str, *, parent_id: int | None = None, kind: str = CAPTION
) -> Caption:
    """A person wrote or corrected the value of *kind*: it becomes current."""
    text = _value(session, kind, text.strip())
    if not text:
        raise CaptionError("a caption cannot be empty")
    _check_length(text)
    if parent_id is None:
        current = current_caption(session, image_id, kind)
        parent_id = current.id if current is not None else None
    caption = Caption(
        image_id=image_id,
        kind=kind,
        text=text,
        source=CaptionSource.HUMAN.value,
        is_current=False,
        parent_id=parent_id,
    )
    _make_current(session, image_id, caption)
    return caption


def accept_caption(session: Session, image_id: int, kind: str = CAPTION) -> Caption:
    """Mark the current value of *kind* as verified by a person (no-op if it already is)."""
    current = current_caption(session, image_id, kind)
    if current is None:
        raise CaptionError("this image has no caption to accept")
    if current.source == CaptionSource.HUMAN:
        return current
    return set_human_caption(session, image_id, current.text, parent_id=current.id, kind=kind)


def revert_to(session: Session, caption_id: int) -> Caption:
    """Make an earlier caption's text current again, as the person's choice."""
    old = session.get(Caption, caption_id)
    if old is None:
        raise CaptionError(f"no caption with id {caption_id}")
    return set_human_caption(session, old.image_id, old.text, parent_id=old.id, kind=old.kind)


class StaleCaptionError(CaptionError):
    """An undo/redo found a different caption current than the one it expected."""


def repoint_current(session: Session, image_id: int, *, expected: int | None, target: int | None,
                    kind: str = CAPTION) -> None:
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
        select(Caption.id).where(Caption.image_id == image_id, Caption.kind == kind, Caption.is_current.is_(True))
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
        .where(Caption.image_id == image_id, Caption.kind == kind, Caption.is_current.is_(True))
        .values(is_current=False)
    )
    if target is not None:
        result = session.execute(
            update(Caption)
            .where(Caption.id == target, Caption.image_id == image_id, Caption.kind == kind)
            .values(is_current=True)
        )
        if result.rowcount != 1:
            raise StaleCaptionError("that caption no longer exists")


# -- bulk replace ---------------------------------------------------------------------------

#: The key of a caption's provenance JSON that records a bulk find-and-replace.
BULK_REPLACE_KEY = "bulk_replace"


def replace_caption_text(
    session: Session,
    current: Caption,
    new_text: str,
    *,
    find: str,
    replacement: str,
    verified: bool = False,
) -> Caption:
    """A bulk find-and-replace changed *current*'s words to *new_text*; it becomes current.

    A person's caption stays a person's (their words, edited).  A model or import
    caption stays what it was — same source, model, adapter and score — unless
    *verified*: a bulk replacement is not a person reading the caption, so it must not
    turn unreviewed captions into training data.  Either way the row records the
    replacement in its provenance and points at *current* as its parent.
    """
    new_text = _value(session, current.kind, new_text.strip())
    if not new_text:
        raise CaptionError("a caption cannot be empty")
    _check_length(new_text)
    record = BulkReplace(find, replacement)
    if current.source == CaptionSource.HUMAN or verified:
        caption = Caption(
            image_id=current.image_id,
            kind=current.kind,
            text=new_text,
            source=CaptionSource.HUMAN.value,
            is_current=False,
            parent_id=current.id,
            provenance=Provenance(bulk_replace=record),
        )
    else:
        caption = Caption(
            image_id=current.image_id,
            kind=current.kind,
            text=new_text,
            source=current.source,
            is_current=False,
            model_name=current.model_name,
            adapter=current.adapter,
            model_version_id=current.model_version_id,
            provenance=(current.provenance or Provenance()).with_(bulk_replace=record),
            score=current.score,
            origin=current.origin,
            parent_id=current.id,
        )
    _make_current(session, current.image_id, caption)
    return caption


# -- words for people: confidence and provenance --------------------------------------------


def confidence_percent(score: float | None) -> float | None:
    """A mean token log-probability as a percentage: ``100 * exp(score)`` (None stays None)."""
    if score is None:
        return None
    return 100.0 * math.exp(min(0.0, float(score)))


def format_confidence(score: float | None) -> str:
    """"87%", "4%", "<1%" for a score; "" when there is none."""
    percent = confidence_percent(score)
    if percent is None:
        return ""
    if percent < 1:
        return "<1%"
    return f"{percent:.0f}%"


def score_for_percent(percent: float) -> float:
    """Inverse of :func:`confidence_percent`: the score bound for a percentage filter."""
    return math.log(max(1e-9, min(100.0, percent)) / 100.0)


def history_action(source: str, text: str, provenance: Provenance | None, parent: Any | None) -> str:
    """What happened when a caption row was written, in words.

    *parent* is the row it came from (anything with ``source`` and ``text``) or None.
    A person's row says whether they *wrote* a caption from scratch, *edited* one,
    *accepted* a model's or import's words unchanged, or *restored* an earlier one.
    """
    bulk = provenance is not None and provenance.bulk_replace is not None
    if source == CaptionSource.MODEL:
        return "model, bulk-replaced (unreviewed)" if bulk else "model"
    if source == CaptionSource.IMPORT:
        return "import, bulk-replaced (unreviewed)" if bulk else "import"
    if bulk:
        return "replaced by a person"
    if parent is None:
        return "written by a person"
    if parent.text != text:
        return "edited by a person"
    if parent.source == CaptionSource.HUMAN:
        return "restored by a person"
    return "accepted by a person"


def _short_model(name: str) -> str:
    """A hub id stays as it is; a local folder (a path) shows as its last component."""
    if name.startswith(("/", ".", "~")) or "\\" in name or (len(name) > 1 and name[1] == ":"):
        return name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return name


def provenance_lines(
    *,
    source: str,
    model_name: str | None,
    adapter: str | None,
    provenance: Provenance | None,
    score: float | None,
    origin: str | None,
    created_at: datetime | None,
    action: str = "",
) -> list[str]:
    """Readable provenance, one fact a line, no duplicates and no raw key dump.

    ``Model: my-org/blip-finetuned`` · ``Confidence: 87%`` ·
    ``Device: cpu, float32`` · ``Decoding: 3 beams, up to 30 tokens`` · ``Date: …``.
    The model is the id the caption records (not the temporary folder a model was
    loaded from); device and precision come from the load, written once each.
    """
    record = provenance or Provenance()
    lines: list[str] = []
    if action and action not in ("model", "import"):  # the plain source goes without saying
        lines.append(action[:1].upper() + action[1:])
    restyle = record.extra.get("restyle") if isinstance(record.extra.get("restyle"), Mapping) else None
    if source in (CaptionSource.MODEL, "model") and model_name:
        # A restyled caption names both stages: the captioner, then the restyler and its style.
        lines.append(f"{'Captioner' if restyle else 'Model'}: {_short_model(model_name)}"
                     + (f" + {_short_model(adapter)}" if adapter else ""))
    if restyle:
        name = restyle.get("version") or _short_model(str(restyle.get("restyler") or "?"))
        lines.append(f"Restyler: {name}" + (" (server)" if restyle.get("backend") == "openai" else ""))
        lines.append(f"Style: “{restyle.get('style', '')}”")
        if restyle.get("source_text"):
            lines.append(f"Description: “{restyle['source_text']}”")
    if score is not None:
        lines.append(f"Confidence: {format_confidence(score)} (mean token log-prob {score:.2f})")
    identity = record.identity or {}
    device = record.extra.get("device") or identity.get("device")
    dtype = str(record.extra.get("dtype") or identity.get("dtype") or "").removeprefix("torch.")
    if "int8" in (identity.get("optimizations") or ()):
        dtype = "int8"  # the linear layers ran quantized: the load dtype alone would say float32
    runtime = {"openvino": "OpenVINO", "openvino-bf16": "OpenVINO", "openvino-int8": "OpenVINO int8"}.get(
        identity.get("runtime"), "")
    hardware = ", ".join(part for part in (str(device) if device else "", dtype, runtime) if part)
    if hardware:
        lines.append(f"Device: {hardware}")
    generation = record.generation if isinstance(record.generation, Mapping) else {}
    beams = generation.get("num_beams")
    max_tokens = generation.get("max_new_tokens")
    decoding = []
    if beams is not None:
        decoding.append("greedy" if beams == 1 else f"{beams} beams")
    if max_tokens is not None:
        decoding.append(f"up to {max_tokens} tokens")
    if generation.get("prompt"):
        decoding.append(f"prompt “{generation['prompt']}”")
    if decoding:
        lines.append("Decoding: " + ", ".join(decoding))
    if record.bulk_replace is not None:
        lines.append(f"Bulk-replaced “{record.bulk_replace.find}” → “{record.bulk_replace.replace}”")
    if origin:
        lines.append(f"Imported from: {origin}")
    if created_at is not None:
        lines.append(f"Date: {created_at:%Y-%m-%d %H:%M}")
    return lines
