"""Parquet files with an ``image`` (bytes) column and ``text``: embedded images are matched by content."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.datasets.errors import CaptionImportError
from core.datasets.readers.base import (
    FILE_NAME_COLUMNS,
    SOURCE_COLUMN,
    TEXT_COLUMNS,
    CaptionGroup,
    irregular,
    other_columns,
    pick_column,
    row_source,
    unique_captions,
)

if TYPE_CHECKING:
    from core.datasets.import_stats import ImportStats


def read_parquet(src: Path, stats: ImportStats) -> Iterator[CaptionGroup]:
    """Parquet files with ``text`` and an ``image`` struct (bytes, path) or ``file_name``."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise CaptionImportError("importing parquet needs pyarrow: pip install pyarrow") from None
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*.parquet") if not p.name.startswith("."))
    if not files:
        raise CaptionImportError(f"no .parquet file found under {src}")
    for parquet_file in files:
        if irregular(parquet_file, stats.problems):
            continue
        try:
            reader = pq.ParquetFile(parquet_file)
            columns = reader.schema_arrow.names
            text_column = pick_column(columns, TEXT_COLUMNS)
            name_column = pick_column(columns, FILE_NAME_COLUMNS)
            if text_column is None or (name_column is None and "image" not in columns):
                stats.errors += 1
                stats.problems.append(f"{parquet_file}: needs a caption column and an image or file name column")
                continue
            # Text columns besides: a per-kind export's kind columns.
            texts = [f.name for f in reader.schema_arrow if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
            wanted = [c for c in dict.fromkeys([text_column, name_column, "image", SOURCE_COLUMN, *texts]) if c in columns]
            row_number = 0
            # Small batches: each row may hold a photo's bytes.
            for batch in reader.iter_batches(batch_size=64, columns=wanted):
                for row in batch.to_pylist():
                    row_number += 1
                    name, image_bytes = _parquet_name_and_bytes(row, name_column)
                    value = row.get(text_column)
                    captions = unique_captions(value if isinstance(value, list) else [value])
                    if not captions:
                        continue
                    yield CaptionGroup(
                        name.replace("\\", "/") or f"row {row_number}",
                        captions,
                        f"parquet:{parquet_file}",
                        image_bytes=image_bytes,
                        written_by=row_source(row),
                        columns=other_columns(row, (text_column, name_column, "image"), {}),
                    )
        except (OSError, ValueError, pa.ArrowException) as exc:  # ArrowInvalid is a ValueError
            stats.errors += 1
            stats.problems.append(f"{parquet_file}: cannot read ({exc})")


def _parquet_name_and_bytes(row: dict[str, Any], name_column: str | None) -> tuple[str, bytes | None]:
    """The row's image name and embedded bytes.

    ``image`` is the HF ``Image`` struct ``{bytes, path}`` (its ``path`` is the name), or
    plain bytes; a ``file_name``-like column wins for the name.  Never the printed dict.
    """
    image = row.get("image")
    image_bytes: bytes | None = None
    image_path: Any = None
    if isinstance(image, dict):
        image_bytes, image_path = image.get("bytes"), image.get("path")
    elif isinstance(image, bytes):
        image_bytes = image
    name: Any = row.get(name_column) if name_column and name_column != "image" else None
    if isinstance(name, dict):
        name = name.get("path")
    if not isinstance(name, str) or not name:
        name = image_path if isinstance(image_path, str) else ""
    if not isinstance(image_bytes, bytes):
        image_bytes = None
    return name, image_bytes


READER = read_parquet
