"""A caption belongs to a picture: the image's content key, and "changed since captioned".

``images.content_key`` is the key of the file's picture as last scanned: the key of its
image data without metadata (:func:`core.fingerprint.image_data_key`, JPEG/PNG/WebP),
else its fingerprint.  A scan that finds another key at the same path knows the picture
itself changed (not only its metadata), moves the current caption to history and keeps
its id in ``images.outdated_caption_id``: the image is *changed since captioned* until a
caption becomes current again (a trigger clears the mark, whoever writes the caption).

Existing rows get the key the library already has: the split key where it is an
image-data key (computed when the file was first seen; metadata writes keep it), the
fingerprint where the format has no such key and the file never changed.  Other rows
(JPEGs scanned before image-data keys existed) get NULL: their next change cannot be
told from a metadata rewrite, so it is not flagged, and the key is stored from then on.

A second trigger keeps a fingerprint-kind key in step when something other than the
scanner rewrites the file (CaptionDesk's metadata writer updates the fingerprint only),
so the library's own writes never count as a change of picture (a file the scanner finds
in error keeps its key: a half-copied file is not a new picture).

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_CLEAR = (
    "BEGIN UPDATE images SET outdated_caption_id = NULL "
    "WHERE id = new.image_id AND outdated_caption_id IS NOT NULL; END"
)


def upgrade() -> None:
    # ADD COLUMN: no table rebuild (and no foreign-key cascade risk on existing rows).
    op.add_column("images", sa.Column("content_key", sa.String(40), nullable=True))
    op.add_column("images", sa.Column("outdated_caption_id", sa.Integer, nullable=True))
    op.execute("UPDATE images SET content_key = split_key WHERE split_key LIKE 'img1:%'")
    op.execute(
        "UPDATE images SET content_key = fingerprint WHERE split_key IS NULL AND state != 'error' "
        "AND format IS NOT NULL AND upper(format) NOT IN ('JPEG', 'MPO', 'PNG', 'WEBP') "
        "AND fingerprint NOT LIKE 'unreadable:%'"
    )
    op.execute(
        f"CREATE TRIGGER captions_current_clears_outdated AFTER INSERT ON captions WHEN new.is_current = 1 {_CLEAR}"
    )
    op.execute(
        "CREATE TRIGGER captions_made_current_clears_outdated AFTER UPDATE OF is_current ON captions "
        f"WHEN new.is_current = 1 AND old.is_current = 0 {_CLEAR}"
    )
    op.execute(
        "CREATE TRIGGER images_content_key_follows_fingerprint AFTER UPDATE OF fingerprint ON images "
        "WHEN old.content_key = old.fingerprint AND new.content_key IS old.content_key "
        "AND new.fingerprint NOT LIKE 'unreadable:%' AND new.state != 'error' "
        "BEGIN UPDATE images SET content_key = new.fingerprint WHERE id = new.id; END"
    )


def downgrade() -> None:
    for trigger in (
        "captions_current_clears_outdated",
        "captions_made_current_clears_outdated",
        "images_content_key_follows_fingerprint",
    ):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("outdated_caption_id")
        batch.drop_column("content_key")
