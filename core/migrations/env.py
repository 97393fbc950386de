"""Alembic environment: always runs on a connection handed in by :mod:`core.migrate`.

``core.migrate.upgrade`` opens the connection with foreign keys OFF and an outer
``BEGIN IMMEDIATE`` transaction, so the whole upgrade commits or rolls back as one and
table rebuilds (batch mode) cannot cascade-delete child rows.
"""

from alembic import context

from core.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - misuse guard
    raise RuntimeError("CaptionDesk migrations run through core.migrate, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite can only ALTER by rebuilding tables
)
with context.begin_transaction():
    context.run_migrations()
