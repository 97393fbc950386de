"""COCO captions: ``annotations/captions_<split>.json`` beside the split folders."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core import __version__
from core.datasets.items import ExportItem
from core.datasets.writers import base


class CocoWriter:
    by_stem = False

    def __init__(self, root: Path, caption_extension: str = ".txt") -> None:
        self.root = root
        self.images: dict[str, list[dict[str, Any]]] = {}
        self.annotations: dict[str, list[dict[str, Any]]] = {}
        self.next_annotation_id = 1

    def add(self, item: ExportItem) -> None:
        base.write_bytes(self.root / item.split / item.name, item.prepared.data)
        width, height = item.prepared.width, item.prepared.height
        if width is None or height is None:
            from core.imaging import probe

            info = probe(self.root / item.split / item.name)
            width, height = info.width, info.height
        self.images.setdefault(item.split, []).append(
            {"id": item.image.image_id, "file_name": item.name, "width": width, "height": height}
        )
        self.annotations.setdefault(item.split, []).append(
            {"id": self.next_annotation_id, "image_id": item.image.image_id, "caption": item.text}
        )
        self.next_annotation_id += 1

    def close(self) -> None:
        folder = self.root / "annotations"
        folder.mkdir(exist_ok=True)
        for split, images in self.images.items():
            document = {
                "info": {
                    "description": f"CaptionDesk export ({split})",
                    "version": __version__,
                    "date_created": datetime.now(UTC).isoformat(timespec="seconds"),
                },
                "licenses": [],
                "images": images,
                "annotations": self.annotations[split],
            }
            with open(folder / f"captions_{split}.json", "w", encoding="utf-8") as handle:
                # ASCII with \u escapes: pycocotools opens the file with the locale's
                # encoding, so UTF-8 text fails to load where that is not UTF-8 (cp1252).
                json.dump(document, handle, ensure_ascii=True)




WRITER = CocoWriter
