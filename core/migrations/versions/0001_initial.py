"""Initial schema: roots, images, captions with provenance, model versions, jobs.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "library_roots",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("path", sa.Text, nullable=False, unique=True),
        sa.Column("added_at", sa.DateTime, nullable=False),
        sa.Column("last_scan_at", sa.DateTime, nullable=True),
    )
    op.create_table(
        "images",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "root_id",
            sa.Integer,
            sa.ForeignKey("library_roots.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("rel_path", sa.Text, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("mtime_ns", sa.Integer, nullable=False),
        sa.Column("fingerprint", sa.String(40), nullable=False),
        sa.Column("width", sa.Integer, nullable=True),
        sa.Column("height", sa.Integer, nullable=True),
        sa.Column("format", sa.String(16), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("first_seen_at", sa.DateTime, nullable=False),
        sa.Column("last_seen_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("root_id", "rel_path", name="uq_images_root_path"),
    )
    op.create_index("ix_images_fingerprint", "images", ["fingerprint"])
    op.create_index("ix_images_state", "images", ["state"])
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("base_model", sa.Text, nullable=False),
        sa.Column("adapter_path", sa.Text, nullable=True),
        sa.Column("family", sa.String(32), nullable=True),
        sa.Column("method", sa.String(16), nullable=True),
        sa.Column("config", sa.JSON, nullable=True),
        sa.Column("metrics", sa.JSON, nullable=True),
        sa.Column("data_snapshot", sa.JSON, nullable=True),
        sa.Column("is_active", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "captions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "image_id", sa.Integer, sa.ForeignKey("images.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("is_current", sa.Boolean, nullable=False),
        sa.Column("model_name", sa.Text, nullable=True),
        sa.Column("adapter", sa.Text, nullable=True),
        sa.Column(
            "model_version_id",
            sa.Integer,
            sa.ForeignKey("model_versions.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("settings", sa.JSON, nullable=True),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("origin", sa.Text, nullable=True),
        sa.Column(
            "parent_id", sa.Integer, sa.ForeignKey("captions.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_captions_image", "captions", ["image_id"])
    op.create_index(
        "uq_captions_one_current",
        "captions",
        ["image_id"],
        unique=True,
        sqlite_where=sa.text("is_current = 1"),
    )
    op.create_index("ix_captions_current_source", "captions", ["is_current", "source"])
    # Defence in depth for the product's first promise: a person's caption is never
    # replaced by a model or an import.  The Python API already checks; this makes a
    # buggy caller fail loudly instead of silently losing the user's words.
    for event, when in (
        ("INSERT", "NEW.is_current = 1"),
        ("UPDATE OF is_current", "NEW.is_current = 1 AND OLD.is_current = 0"),
    ):
        name = "captions_keep_human_" + event.split()[0].lower()
        op.execute(
            f"""
            CREATE TRIGGER {name} BEFORE {event} ON captions
            WHEN {when} AND NEW.source != 'human' AND EXISTS (
                SELECT 1 FROM captions
                WHERE image_id = NEW.image_id AND is_current = 1 AND source = 'human'
                  AND id IS NOT NEW.id)
            BEGIN
                SELECT RAISE(ABORT, 'a human caption is current for this image; a model or imported caption cannot replace it');
            END
            """
        )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("params", sa.JSON, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("done", sa.Integer, nullable=False),
        sa.Column("total", sa.Integer, nullable=True),
        sa.Column("checkpoint", sa.JSON, nullable=True),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_table("captions")
    op.drop_table("model_versions")
    op.drop_table("images")
    op.drop_table("library_roots")
