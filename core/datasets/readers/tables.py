"""Caption tables (JSON lines and CSV) with a file-name and a caption column, as the
imagefolder and csv readers read them."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.datasets.readers.base import (
    FILE_NAME_COLUMNS,
    TEXT_COLUMNS,
    CaptionGroup,
    contained_file,
    other_columns,
    pick_column,
    row_source,
    source_root,
    unique_captions,
    valid_text,
)
from core.inputs import open_regular

if TYPE_CHECKING:
    from core.datasets.import_stats import ImportStats


#: CSV fields may be this long (Python's default of 128 KiB rejected whole files).
MAX_CSV_FIELD = 16 * 1024 * 1024


def rows_from_table(
    rows: Iterable[dict[str, Any]], columns: Iterable[str], table_file: Path, fmt: str, stats: ImportStats,
    base: Path,
) -> Iterator[CaptionGroup]:
    """Groups from a table with a file-name and a caption column (paths relative to it)."""
    columns = list(columns)
    name_column = pick_column(columns, FILE_NAME_COLUMNS)
    text_column = pick_column(columns, TEXT_COLUMNS)
    if name_column is None or text_column is None:
        stats.errors += 1
        stats.problems.append(
            f"{table_file}: needs a file name column ({', '.join(FILE_NAME_COLUMNS)}) "
            f"and a caption column ({', '.join(TEXT_COLUMNS)})"
        )
        return
    grouped: dict[str, list[Any]] = {}
    written_by: dict[str, str | None] = {}
    extra: dict[str, dict[str, str]] = {}
    for row in rows:
        name = row.get(name_column)
        if not name or not isinstance(name, (str, int)):
            continue
        value = row.get(text_column)
        texts = value if isinstance(value, list) else [value]
        key = str(name).replace("\\", "/")
        grouped.setdefault(key, []).extend(texts)
        written_by.setdefault(key, row_source(row))  # the first caption's row decides
        other_columns(row, (name_column, text_column), extra.setdefault(key, {}))
    for name, texts in grouped.items():
        captions = unique_captions(texts)
        if not captions:
            continue
        yield CaptionGroup(
            name, captions, f"{fmt}:{table_file}", image_file=contained_file(table_file.parent, name, base),
            written_by=written_by.get(name), columns=extra.get(name, {}),
        )


def read_jsonl(path: Path, stats: ImportStats) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    columns: dict[str, None] = {}
    # surrogateescape: a line of bad UTF-8 is that line's problem, not the file's.
    with open_regular(path, encoding="utf-8-sig", errors="surrogateescape") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if not valid_text(line):
                stats.problems.append(f"{path}:{number}: not valid UTF-8, skipped")
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                stats.problems.append(f"{path}:{number}: not valid JSON, skipped")
                continue
            if isinstance(row, dict):
                rows.append(row)
                columns.update(dict.fromkeys(row))
    return rows, list(columns)


def read_csv(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    # Long captions are fine (over-long ones are skipped per row later); the limit is
    # process-wide, so it is put back afterwards.  surrogateescape: rows with bad UTF-8
    # are skipped one by one instead of the whole file.
    previous_limit = csv.field_size_limit(MAX_CSV_FIELD)
    try:
        with open_regular(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            return rows, [c for c in reader.fieldnames or [] if isinstance(c, str)]
    finally:
        csv.field_size_limit(previous_limit)


def rows_from_tables(
    src: Path, tables: list[Path], read: Callable[[Path], tuple[list[dict[str, Any]], list[str]]], fmt: str,
    stats: ImportStats,
) -> Iterator[CaptionGroup]:
    """Caption groups from each table *read* parses; a table that cannot be read is one recorded error."""
    base = source_root(src)
    for table in tables:
        try:
            rows, columns = read(table)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            stats.errors += 1
            stats.problems.append(f"{table}: cannot read ({exc})")
            continue
        yield from rows_from_table(rows, columns, table, fmt, stats, base)
