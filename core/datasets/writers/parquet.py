"""Parquet shards with the image bytes embedded in the Hugging Face ``Image`` layout."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.datasets.errors import ExportError
from core.datasets.items import ExportItem
from core.datasets.writers.base import provenance

#: Parquet row groups: at most this many images or bytes (the Hub viewer likes ~100).
PARQUET_ROWS_PER_GROUP = 100
PARQUET_BYTES_PER_GROUP = 64 * 1024 * 1024


class ParquetWriter:
    """One parquet file per split, in row groups, with the HF ``Image`` feature layout."""

    by_stem = False
    #: One string column per caption kind after the fixed ones (core.datasets.kind_values).
    per_kind_columns = True

    def __init__(self, root: Path, caption_extension: str = ".txt", kind_columns: Sequence[str] = ()) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ExportError("parquet export needs pyarrow: pip install pyarrow") from None
        self.pa, self.pq = pa, pq
        self.root = root
        string = pa.string()
        self.schema = pa.schema(
            [
                ("image", pa.struct([("bytes", pa.binary()), ("path", string)])),
                ("text", string),
                ("file_name", string),
                ("source", string),
                ("model_name", string),
                ("adapter", string),
                ("origin", string),
                ("score", pa.float64()),
                ("caption_created_at", string),
                ("fingerprint", string),
                ("library_path", string),
                *((column, string) for column in kind_columns),
            ]
        )
        value = {"dtype": "string", "_type": "Value"}
        features: dict[str, Any] = {name: value for name in self.schema.names}
        features["image"] = {"_type": "Image"}
        features["score"] = {"dtype": "float64", "_type": "Value"}
        # The key datasets itself writes: load_dataset("parquet") then decodes `image`.
        self.schema = self.schema.with_metadata(
            {"huggingface": json.dumps({"info": {"features": features}})}
        )
        self.kind_columns = tuple(kind_columns)
        self.writers: dict[str, Any] = {}
        self.buffers: dict[str, list[dict[str, Any]]] = {}
        self.buffered_bytes: dict[str, int] = {}

    def add(self, item: ExportItem) -> None:
        row = {"image": {"bytes": item.prepared.data, "path": item.name}, "text": item.text, "file_name": item.name}
        row.update(provenance(item.image))
        row.update({column: item.kinds.get(column) for column in self.kind_columns})
        self.buffers.setdefault(item.split, []).append(row)
        self.buffered_bytes[item.split] = self.buffered_bytes.get(item.split, 0) + len(item.prepared.data)
        if (
            len(self.buffers[item.split]) >= PARQUET_ROWS_PER_GROUP
            or self.buffered_bytes[item.split] >= PARQUET_BYTES_PER_GROUP
        ):
            self._flush(item.split)

    def _flush(self, split: str) -> None:
        rows = self.buffers.get(split)
        if not rows:
            return
        writer = self.writers.get(split)
        if writer is None:
            folder = self.root / "data"
            folder.mkdir(exist_ok=True)
            # The Hub's shard naming; datasets infers the split from it.
            writer = self.pq.ParquetWriter(folder / f"{split}-00000-of-00001.parquet", self.schema)
            self.writers[split] = writer
        writer.write_table(self.pa.Table.from_pylist(rows, schema=self.schema))
        self.buffers[split] = []
        self.buffered_bytes[split] = 0

    def close(self) -> None:
        try:
            for split in list(self.buffers):
                self._flush(split)
        finally:
            writers, self.writers = list(self.writers.values()), {}
            failures: list[OSError] = []
            for writer in writers:
                try:
                    writer.close()
                except OSError as exc:
                    failures.append(exc)
                finally:
                    writer.is_open = False  # else pyarrow retries (and prints) on garbage collection
            if failures:
                raise failures[0]




WRITER = ParquetWriter
