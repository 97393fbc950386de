"""The Hugging Face imagefolder layout: ``train/`` and ``validation/`` with a ``metadata.jsonl`` each."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

from core.datasets.items import ExportItem
from core.datasets.writers import base


class ImageFolderWriter:
    by_stem = False
    #: Written in each split folder: no image (or folder of images) may take the name.
    reserved_names = ("metadata.jsonl",)

    #: One key per caption kind in every line, "" where a photo has no value of it (datasets
    #: infers each split's types from its first lines: a null column would differ between splits).
    per_kind_columns = True

    def __init__(self, root: Path, caption_extension: str = ".txt", kind_columns: Sequence[str] = ()) -> None:
        self.root = root
        self.kind_columns = tuple(kind_columns)
        self.handles: dict[str, io.TextIOWrapper] = {}

    def add(self, item: ExportItem) -> None:
        base.write_bytes(self.root / item.split / item.name, item.prepared.data)
        handle = self.handles.get(item.split)
        if handle is None:
            # Kept open across add() calls, closed in close() (also on failure).
            handle = open(self.root / item.split / "metadata.jsonl", "w", encoding="utf-8", newline="\n")  # noqa: SIM115
            self.handles[item.split] = handle
        # `source` (human / model / import) lets an import keep who wrote each caption.
        line = {"file_name": item.name, "text": item.text, "source": item.image.source,
                **{column: item.kinds.get(column) or "" for column in self.kind_columns}}
        handle.write(json.dumps(line, ensure_ascii=False) + "\n")

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()




WRITER = ImageFolderWriter
