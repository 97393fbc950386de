"""Full-text search over captions (FTS5) and CHECK constraints on enumerated columns.

Adding the CHECK constraints rebuilds the ``images`` table (SQLite cannot add a
constraint in place).  Dropping the old table would cascade-delete every caption if
foreign keys were on: ``core.migrate`` runs migrations with them off and verifies
``PRAGMA foreign_key_check`` afterwards.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images", recreate="always") as batch:
        batch.create_check_constraint("ck_images_state", "state IN ('ok', 'missing', 'error')")
    # ``captions`` is deliberately not rebuilt: a rebuild drops its triggers.

    # External-content FTS5 index over every caption row (history included; searches
    # join on is_current).  unicode61 with diacritics removed: "cafe" finds "café".
    op.execute(
        "CREATE VIRTUAL TABLE captions_fts USING fts5("
        "text, content='captions', content_rowid='id', "
        "tokenize='unicode61 remove_diacritics 2')"
    )
    op.execute(
        "CREATE TRIGGER captions_fts_insert AFTER INSERT ON captions BEGIN "
        "INSERT INTO captions_fts(rowid, text) VALUES (new.id, new.text); END"
    )
    op.execute(
        "CREATE TRIGGER captions_fts_delete AFTER DELETE ON captions BEGIN "
        "INSERT INTO captions_fts(captions_fts, rowid, text) VALUES ('delete', old.id, old.text); END"
    )
    op.execute(
        "CREATE TRIGGER captions_fts_update AFTER UPDATE OF text ON captions BEGIN "
        "INSERT INTO captions_fts(captions_fts, rowid, text) VALUES ('delete', old.id, old.text); "
        "INSERT INTO captions_fts(rowid, text) VALUES (new.id, new.text); END"
    )
    # Index the captions that already exist.
    op.execute("INSERT INTO captions_fts(captions_fts) VALUES ('rebuild')")


def downgrade() -> None:
    for trigger in ("captions_fts_insert", "captions_fts_delete", "captions_fts_update"):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.execute("DROP TABLE IF EXISTS captions_fts")
    with op.batch_alter_table("images", recreate="always") as batch:
        batch.drop_constraint("ck_images_state", type_="check")
