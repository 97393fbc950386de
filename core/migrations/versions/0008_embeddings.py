"""Embeddings: the vectors behind search by meaning, in the library file itself.

One row per (model, kind, image): ``kind`` is the caption kind whose text was embedded
(``caption``) or ``image`` for the picture; ``source_hash`` is the hash of that text or
the picture's content key, so an index update re-embeds only what changed and a query
drops a vector whose text or picture has changed since.  Rows go with their image (FK
cascade), inside the same transactions as the images they describe.  AUTOINCREMENT ids
are never reused, so ``(count, max(id))`` tells a reader that its cached matrix is stale.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "embeddings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("image_id", sa.Integer(), sa.ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("source_hash", sa.String(40), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("uq_embeddings_model_kind_image", "embeddings", ["model", "kind", "image_id"], unique=True)
    op.create_index("ix_embeddings_image", "embeddings", ["image_id"])


def downgrade() -> None:
    op.drop_index("ix_embeddings_image", table_name="embeddings")
    op.drop_index("uq_embeddings_model_kind_image", table_name="embeddings")
    op.drop_table("embeddings")
