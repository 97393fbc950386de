"""Duplicates: a perceptual hash per picture, duplicate groups and "keep one" marks.

``image_hashes`` holds each image's perceptual hashes (``core.perceptual_hash``: a DCT
hash, a gradient hash and a colour signature, 64 bits each, stored as signed SQLite integers) with the
content key they were computed for (``images.content_key``, else the fingerprint): a
changed picture has another key, so its stale hashes are recomputed; a metadata rewrite
keeps the key and the hashes.  NULL hashes mean the picture could not be decoded.

On ``images``: ``duplicate_group`` (the group of exact and near-duplicate photos the
duplicates job found, NULL for a photo with none), ``duplicate_split_key`` (the group's
smallest split key, which every member's split hashes so a group never straddles the
train/validation split) and ``duplicate_mark`` (``kept`` / ``excluded``: "keep one"
leaves the others out of training and export; no file is ever deleted).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "image_hashes",
        sa.Column("image_id", sa.Integer(), sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("content_key", sa.String(40), nullable=False),
        sa.Column("phash", sa.BigInteger(), nullable=True),
        sa.Column("dhash", sa.BigInteger(), nullable=True),
        sa.Column("colour", sa.BigInteger(), nullable=True),
    )
    # ADD COLUMN: no table rebuild (and no foreign-key cascade risk on existing rows).
    op.add_column("images", sa.Column("duplicate_group", sa.Integer(), nullable=True))
    op.add_column("images", sa.Column("duplicate_split_key", sa.String(40), nullable=True))
    op.add_column("images", sa.Column("duplicate_mark", sa.String(16), nullable=True))
    op.create_index("ix_images_duplicate_group", "images", ["duplicate_group"])


def downgrade() -> None:
    op.drop_index("ix_images_duplicate_group", table_name="images")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("duplicate_mark")
        batch.drop_column("duplicate_split_key")
        batch.drop_column("duplicate_group")
    op.drop_table("image_hashes")
