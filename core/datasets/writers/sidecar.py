"""Images with a caption file of the same stem (``.txt`` or ``.caption``), as trainers read them."""

from __future__ import annotations

from pathlib import Path

from core.datasets.items import ExportItem, caption_file_text, image_data
from core.datasets.writers import base


class SidecarWriter:
    by_stem = True

    def __init__(self, root: Path, caption_extension: str) -> None:
        self.root = root
        self.caption_extension = caption_extension
        self.companion_suffixes = (caption_extension,)

    def add(self, item: ExportItem) -> None:
        image_path = self.root / item.split / item.name
        base.write_bytes(image_path, image_data(item))
        base.write_bytes(image_path.with_suffix(self.caption_extension), caption_file_text(item).encode("utf-8"))

    def close(self) -> None:
        pass




WRITER = SidecarWriter
