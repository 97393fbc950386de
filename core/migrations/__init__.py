"""Alembic migrations of the library schema, shipped inside the package and run on open."""
