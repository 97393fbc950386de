"""``captions.csv`` (file name, caption, split and provenance columns) beside the split folders."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from core.datasets.items import ExportItem
from core.datasets.writers import base
from core.datasets.writers.base import provenance

CSV_NAME = "captions.csv"
CSV_COLUMNS = (
    "file_name", "text", "split", "source", "model_name", "adapter", "origin", "score",
    "caption_created_at", "fingerprint", "library_path",
)


class CsvWriter:
    by_stem = False
    #: One column per caption kind after the fixed ones (core.datasets.kind_values).
    per_kind_columns = True

    def __init__(self, root: Path, caption_extension: str = ".txt", kind_columns: Sequence[str] = ()) -> None:
        self.root = root
        self.kind_columns = tuple(kind_columns)
        self.handle = open(root / CSV_NAME, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed in close()
        self.writer = csv.DictWriter(self.handle, fieldnames=(*CSV_COLUMNS, *self.kind_columns))
        self.writer.writeheader()

    def add(self, item: ExportItem) -> None:
        base.write_bytes(self.root / item.split / item.name, item.prepared.data)
        row = {"file_name": f"{item.split}/{item.name}", "text": item.text, "split": item.split}
        row.update(provenance(item.image))
        row.update({column: item.kinds.get(column) for column in self.kind_columns})
        self.writer.writerow({k: "" if v is None else v for k, v in row.items()})

    def close(self) -> None:
        self.handle.close()




WRITER = CsvWriter
