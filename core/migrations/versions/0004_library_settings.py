"""Library-wide settings: a small key/value table (the first key: the chosen base model).

A library's "current model" (:mod:`core.training.current`) is its active model version,
else the base model the library chose, else the application default.  The choice has to
live in the library, not in one program's preferences, so the CLI and the window caption
with the same model.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "library_settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("library_settings")
