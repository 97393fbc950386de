"""Caption kinds: one current value per (image, kind); ``settings`` becomes ``provenance``.

* ``captions.kind`` (every existing row is a ``caption``); the one-current index becomes
  (image_id, kind), and the human-caption triggers compare rows of the same kind only.
* ``captions.settings`` is renamed ``provenance`` (the same JSON; ``core.provenance``
  reads old rows).
* ``caption_kinds``: the kinds a library's user defined (built-in ones live in code).
* "Changed since captioned" is about the picture's caption: only a ``caption`` made
  current clears ``images.outdated_caption_id``.
* Full-text search needs nothing new: ``captions_fts`` already indexes every row, and a
  search picks its kind when it joins the current rows.

Only ADD COLUMN and RENAME COLUMN touch ``captions``: no rebuild (a rebuild would drop its
triggers and, without ``core.migrate``'s care, cascade).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_HUMAN_TRIGGER = """
    CREATE TRIGGER {name} BEFORE {event} ON captions
    WHEN {when} AND NEW.source != 'human' AND EXISTS (
        SELECT 1 FROM captions
        WHERE image_id = NEW.image_id AND {same_kind}is_current = 1 AND source = 'human'
          AND id IS NOT NEW.id)
    BEGIN
        SELECT RAISE(ABORT, 'a human caption is current for this image; a model or imported caption cannot replace it');
    END
"""
_HUMAN_EVENTS = (
    ("captions_keep_human_insert", "INSERT", "NEW.is_current = 1"),
    ("captions_keep_human_update", "UPDATE OF is_current", "NEW.is_current = 1 AND OLD.is_current = 0"),
)
_CLEAR = (
    "BEGIN UPDATE images SET outdated_caption_id = NULL "
    "WHERE id = new.image_id AND outdated_caption_id IS NOT NULL; END"
)


def _triggers(*, kinds: bool) -> None:
    for name, event, when in _HUMAN_EVENTS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
        same_kind = "kind = NEW.kind AND " if kinds else ""
        op.execute(_HUMAN_TRIGGER.format(name=name, event=event, when=when, same_kind=same_kind))
    caption_only = " AND new.kind = 'caption'" if kinds else ""
    op.execute("DROP TRIGGER IF EXISTS captions_current_clears_outdated")
    op.execute("DROP TRIGGER IF EXISTS captions_made_current_clears_outdated")
    op.execute("CREATE TRIGGER captions_current_clears_outdated AFTER INSERT ON captions "
               f"WHEN new.is_current = 1{caption_only} {_CLEAR}")
    op.execute("CREATE TRIGGER captions_made_current_clears_outdated AFTER UPDATE OF is_current ON captions "
               f"WHEN new.is_current = 1 AND old.is_current = 0{caption_only} {_CLEAR}")


def upgrade() -> None:
    op.add_column("captions", sa.Column("kind", sa.String(32), nullable=False, server_default="caption"))
    op.execute("ALTER TABLE captions RENAME COLUMN settings TO provenance")
    op.drop_index("uq_captions_one_current", table_name="captions")
    op.create_index("uq_captions_one_current", "captions", ["image_id", "kind"], unique=True,
                    sqlite_where=sa.text("is_current = 1"))
    _triggers(kinds=True)
    op.create_table(
        "caption_kinds",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("value_type", sa.String(16), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    others = op.get_bind().exec_driver_sql("SELECT count(*) FROM captions WHERE kind != 'caption'").scalar()
    if others:
        raise RuntimeError(f"{others} values of other caption kinds than 'caption' would be lost; not downgrading")
    op.drop_table("caption_kinds")
    op.drop_index("uq_captions_one_current", table_name="captions")
    op.create_index("uq_captions_one_current", "captions", ["image_id"], unique=True,
                    sqlite_where=sa.text("is_current = 1"))
    _triggers(kinds=False)
    op.execute("ALTER TABLE captions RENAME COLUMN provenance TO settings")
    op.execute("ALTER TABLE captions DROP COLUMN kind")
