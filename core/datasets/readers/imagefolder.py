"""Hugging Face imagefolder: every ``metadata.jsonl`` / ``metadata.csv`` under SRC."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from core.datasets.errors import CaptionImportError
from core.datasets.readers.base import CaptionGroup, walk
from core.datasets.readers.tables import read_csv, read_jsonl, rows_from_tables

if TYPE_CHECKING:
    from core.datasets.import_stats import ImportStats


def read_imagefolder(src: Path, stats: ImportStats) -> Iterator[CaptionGroup]:
    """Every ``metadata.jsonl`` / ``metadata.csv`` under *src*."""
    tables = [src] if src.is_file() else [
        folder / name for folder, files in walk(src) for name in files if name in ("metadata.jsonl", "metadata.csv")
    ]
    if not tables:
        raise CaptionImportError(f"no metadata.jsonl or metadata.csv found under {src}")
    yield from rows_from_tables(
        src, tables, lambda t: read_jsonl(t, stats) if t.suffix == ".jsonl" else read_csv(t), "imagefolder", stats
    )


READER = read_imagefolder
