"""ORM models of a CaptionDesk library (SQLAlchemy 2.x typed declarative mapping).

The schema itself is owned by the Alembic migrations in ``core/migrations``; these
classes must stay in step with them (``tests/core/test_store.py`` compares the two).

Captions keep their whole history: every text ever written for an image is a row, and
at most one row per (image, kind) is *current* (a partial unique index enforces it; the
kinds are :mod:`core.kinds`).  Provenance lives on each row: ``source`` says whether a
model, a person or an import wrote it, the model/adapter identity is stored beside it and
the rest is a typed :class:`~core.provenance.Provenance` record.  A trigger refuses to make
a model or import value current while a human one of the same kind is, so a person's
words are never overwritten even by a buggy caller.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from core.provenance import Provenance, as_provenance


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class ProvenanceJSON(TypeDecorator[Provenance]):
    """A :class:`Provenance` stored as its JSON object (writers may pass a plain mapping)."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> dict[str, Any] | None:
        record = as_provenance(value)
        return None if record is None else record.to_json()

    def process_result_value(self, value: Any, dialect: Any) -> Provenance | None:
        return None if value is None else Provenance.from_json(value)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, Provenance: ProvenanceJSON}


class ImageState(enum.StrEnum):
    OK = "ok"
    MISSING = "missing"
    ERROR = "error"


class CaptionSource(enum.StrEnum):
    MODEL = "model"
    HUMAN = "human"
    IMPORT = "import"


class DuplicateMark(enum.StrEnum):
    """What "keep one" decided for a member of a duplicate group (no file is ever deleted)."""

    KEPT = "kept"
    #: Left out of training and export; the file and its captions stay.
    EXCLUDED = "excluded"


class JobState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"
    #: Found "running" at start-up: the process that ran it died.  Can be resumed.
    INTERRUPTED = "interrupted"


class LibraryRoot(Base):
    """A folder the user added; images are stored relative to it."""

    __tablename__ = "library_roots"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    added_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_scan_at: Mapped[datetime | None]

    images: Mapped[list[Image]] = relationship(
        back_populates="root", cascade="all, delete-orphan", passive_deletes=True
    )


class Image(Base):
    """One image file, identified by its root and path, followed across moves by fingerprint."""

    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("root_id", "rel_path", name="uq_images_root_path"),
        Index("ix_images_fingerprint", "fingerprint"),
        Index("ix_images_state", "state"),
        Index("ix_images_duplicate_group", "duplicate_group"),
        CheckConstraint("state IN ('ok', 'missing', 'error')", name="ck_images_state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    root_id: Mapped[int] = mapped_column(ForeignKey("library_roots.id", ondelete="CASCADE"))
    rel_path: Mapped[str] = mapped_column(Text)
    size: Mapped[int]
    mtime_ns: Mapped[int]
    fingerprint: Mapped[str] = mapped_column(String(40))
    #: The image-data key the scanner computed when the library first saw the file, else the
    #: fingerprint before its first change (trigger, migration 0003); None = neither.  The
    #: train/validation split hashes ``split_key or fingerprint`` (see core.splits).
    split_key: Mapped[str | None] = mapped_column(String(40))
    #: The key of the picture as last scanned: its image-data key, else its fingerprint
    #: (migration 0005); another key at the same path means the picture itself changed.
    content_key: Mapped[str | None] = mapped_column(String(40))
    #: The caption that was current when the picture changed under it (now in history);
    #: set means *changed since captioned* until a caption is current again (trigger).
    outdated_caption_id: Mapped[int | None]
    #: The group of exact and near-duplicate photos this one belongs to (core.duplicates);
    #: None = none found.  Every member's split hashes the group's ``duplicate_split_key``.
    duplicate_group: Mapped[int | None]
    duplicate_split_key: Mapped[str | None] = mapped_column(String(40))
    #: ``kept`` / ``excluded`` ("keep one": excluded photos stay out of training and export).
    duplicate_mark: Mapped[str | None] = mapped_column(String(16))
    width: Mapped[int | None]
    height: Mapped[int | None]
    format: Mapped[str | None] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default=ImageState.OK)
    error: Mapped[str | None] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)

    root: Mapped[LibraryRoot] = relationship(back_populates="images")
    captions: Mapped[list[Caption]] = relationship(
        back_populates="image",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Caption.id",
    )


class ModelVersion(Base):
    """A captioning model the library knows: a base model, optionally with a trained adapter."""

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    base_model: Mapped[str] = mapped_column(Text)
    adapter_path: Mapped[str | None] = mapped_column(Text)
    family: Mapped[str | None] = mapped_column(String(32))
    method: Mapped[str | None] = mapped_column(String(16))
    config: Mapped[dict[str, Any] | None]
    metrics: Mapped[dict[str, Any] | None]
    data_snapshot: Mapped[dict[str, Any] | None]
    is_active: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LibrarySetting(Base):
    """One library-wide setting (e.g. the chosen base model), shared by the CLI and the window."""

    __tablename__ = "library_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str | None] = mapped_column(Text)


class Caption(Base):
    """One caption text for an image, with where it came from."""

    __tablename__ = "captions"
    __table_args__ = (
        Index("ix_captions_image", "image_id"),
        # At most one current value per image and kind.
        Index(
            "uq_captions_one_current",
            "image_id",
            "kind",
            unique=True,
            sqlite_where=text("is_current = 1"),
        ),
        Index("ix_captions_current_source", "is_current", "source"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    #: Which of the image's values this is (``core.kinds``: caption, alt_text, keywords, …).
    kind: Mapped[str] = mapped_column(String(32), default="caption", server_default="caption")
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))
    is_current: Mapped[bool] = mapped_column(default=True)
    #: For model captions: hub id or folder of the base model.
    model_name: Mapped[str | None] = mapped_column(Text)
    #: For model captions: adapter name/path, None for the plain base model.
    adapter: Mapped[str | None] = mapped_column(Text)
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL")
    )
    #: How the text came to be: generation settings and prompt (model), import details
    #: (file, format), a bulk replacement (column ``settings`` before migration 0007).
    provenance: Mapped[Provenance | None]
    #: Mean token log-probability of a model caption (<= 0; nearer 0 = more confident).
    score: Mapped[float | None] = mapped_column(Float)
    #: For imports: where the text came from (file path, format).
    origin: Mapped[str | None] = mapped_column(Text)
    #: The caption this one was derived from (a correction of a model caption, a revert).
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("captions.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    image: Mapped[Image] = relationship(back_populates="captions")


class CaptionKindRow(Base):
    """A caption kind the library's user defined (the built-in ones are in ``core.kinds``)."""

    __tablename__ = "caption_kinds"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    label: Mapped[str] = mapped_column(Text)
    value_type: Mapped[str] = mapped_column(String(16), default="text")
    #: The instruction a prompted model gets for this kind (None: ask in the Caption dialog).
    prompt: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """A long-running job (scan, caption, train, export) and how far it got."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any] | None]
    state: Mapped[str] = mapped_column(String(16), default=JobState.PENDING)
    done: Mapped[int] = mapped_column(default=0)
    total: Mapped[int | None]
    #: Job-specific resume point and counters (e.g. last image id, errors so far).
    checkpoint: Mapped[dict[str, Any] | None]
    message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None]


class CaptionClaim(Base):
    """An image a caption job has claimed to caption (see ``core.captioning.claims``)."""

    __tablename__ = "caption_claims"
    __table_args__ = (Index("ix_caption_claims_image", "image_id"),)

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)


class ImageHash(Base):
    """An image's perceptual hashes, for the picture whose content key they were computed from."""

    __tablename__ = "image_hashes"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    #: ``images.content_key`` (else the fingerprint) when hashed: another key = a stale hash.
    content_key: Mapped[str] = mapped_column(String(40))
    #: Signed 64-bit forms of the DCT and gradient hashes and the colour signature;
    #: None = the picture did not decode.
    phash: Mapped[int | None] = mapped_column(BigInteger)
    dhash: Mapped[int | None] = mapped_column(BigInteger)
    colour: Mapped[int | None] = mapped_column(BigInteger)


class Embedding(Base):
    """One vector for search by meaning (see ``core.search.store``): a text kind's or the picture's."""

    __tablename__ = "embeddings"
    __table_args__ = (
        Index("uq_embeddings_model_kind_image", "model", "kind", "image_id", unique=True),
        Index("ix_embeddings_image", "image_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    #: The caption kind whose text was embedded, or ``image`` for the picture itself.
    kind: Mapped[str] = mapped_column(String(32))
    #: The embedding model's id or folder.
    model: Mapped[str] = mapped_column(Text)
    #: Hash of the embedded text, or the picture's content key: changed → re-embedded.
    source_hash: Mapped[str] = mapped_column(String(40))
    #: float32 little-endian, L2-normalised.
    vector: Mapped[bytes] = mapped_column(LargeBinary)
