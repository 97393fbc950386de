"""Caption claims: concurrent caption runs on one library share the work.

A caption run claims each batch (``core.captioning.claims``) before captioning it, so a
second run started on the same library takes the images the first one does not hold
instead of captioning every image again.  A claim belongs to a job; it counts only while
that job is running in a live process, so a crashed run's claims never block anyone.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "caption_claims",
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("image_id", sa.Integer(), sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("claimed_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_caption_claims_image", "caption_claims", ["image_id"])


def downgrade() -> None:
    op.drop_index("ix_caption_claims_image", table_name="caption_claims")
    op.drop_table("caption_claims")
