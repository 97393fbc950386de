"""A CSV with a file-name and a caption column (CaptionDesk's ``captions.csv`` export)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from core.datasets.errors import CaptionImportError
from core.datasets.readers.base import CaptionGroup
from core.datasets.readers.tables import read_csv, rows_from_tables

if TYPE_CHECKING:
    from core.datasets.import_stats import ImportStats


def read_csv_file(src: Path, stats: ImportStats) -> Iterator[CaptionGroup]:
    """A CSV file (or every ``*.csv`` in a folder) with file-name and caption columns."""
    tables = [src] if src.is_file() else sorted(src.glob("*.csv"))
    if not tables:
        raise CaptionImportError(f"no .csv file found in {src}")
    yield from rows_from_tables(src, tables, read_csv, "csv", stats)


READER = read_csv_file
