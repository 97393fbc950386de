"""A stable split key per image, so rewriting a file never moves it between splits.

The train/validation split (:mod:`core.splits`) hashes an image's identity.  Until now
that was its content fingerprint, which changes whenever the file's bytes do — writing
captions into the photo's XMP metadata included — so a validation photo could move to
train.  ``images.split_key`` keeps the fingerprint the image had *before its first
change*; NULL means "never changed: use the fingerprint".  A trigger fills it the
first time the fingerprint changes, whoever changes it (scanner, metadata writer, a
future feature), so no code path can forget to.  Placeholder fingerprints of files
that could not be read (``unreadable:…``) are never kept as keys.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ADD COLUMN: no table rebuild, existing rows keep NULL (= their fingerprint).
    op.add_column("images", sa.Column("split_key", sa.String(40), nullable=True))
    op.execute(
        "CREATE TRIGGER images_keep_split_key AFTER UPDATE OF fingerprint ON images "
        "WHEN new.split_key IS NULL AND old.fingerprint <> new.fingerprint "
        "AND old.fingerprint NOT LIKE 'unreadable:%' "
        "BEGIN UPDATE images SET split_key = old.fingerprint WHERE id = new.id; END"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS images_keep_split_key")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("split_key")
