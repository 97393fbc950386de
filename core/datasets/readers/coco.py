"""COCO captions JSON (``images`` + ``annotations``): a file, or a folder holding them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.datasets.errors import CaptionImportError
from core.datasets.readers.base import CaptionGroup, contained_file, source_root, unique_captions
from core.datasets.staging import MANIFEST_NAME
from core.inputs import open_regular

if TYPE_CHECKING:
    from core.datasets.import_stats import ImportStats


def _coco_files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    files = sorted(src.glob("annotations/captions_*.json")) or sorted(src.glob("captions_*.json"))
    files = files or sorted(src.glob("annotations/*.json")) or sorted(src.glob("*.json"))
    files = [f for f in files if f.name != MANIFEST_NAME]
    if not files:
        raise CaptionImportError(f"no COCO captions JSON found in {src}")
    return files


def _coco_image_folders(json_file: Path) -> list[Path]:
    """Where a COCO file's images may be: beside it, or in the split folder next door."""
    split = json_file.stem.removeprefix("captions_")
    parent = json_file.parent
    base = parent.parent if parent.name == "annotations" else parent
    candidates = [base / split, base / f"{split}2017", base / f"{split}2014", base, parent]
    return [c for c in candidates if c.is_dir()]


def _coco_id(value: Any) -> int | None:
    """A COCO id: an integer (or integral number/string); None for 1e999, NaN, "x", True..."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) < 30:
        return int(value)
    return None


def _load_coco(json_file: Path) -> tuple[list[Any], list[Any]]:
    """``(images, annotations)`` lists; ValueError saying why the file is not COCO."""
    with open_regular(json_file, encoding="utf-8") as handle:
        try:
            document = json.load(handle)
        except RecursionError:
            raise ValueError("nested too deeply to be a COCO file") from None
    if not isinstance(document, dict):
        raise ValueError("the top level is not an object")
    images, annotations = document.get("images"), document.get("annotations")
    if not isinstance(images, list) or not isinstance(annotations, list):
        raise ValueError('needs "images" and "annotations" lists')
    return images, annotations


def read_coco(src: Path, stats: ImportStats) -> Iterator[CaptionGroup]:
    """COCO captions: ``images`` (id, file_name) and ``annotations`` (image_id, caption)."""
    base = source_root(src)
    for json_file in _coco_files(src):
        try:
            image_entries, annotation_entries = _load_coco(json_file)
        except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError included
            stats.errors += 1
            stats.problems.append(f"{json_file}: not a COCO captions file ({exc})")
            continue
        images: dict[int, str] = {}
        bad_entries = 0
        for entry in image_entries:
            image_id = _coco_id(entry.get("id")) if isinstance(entry, dict) else None
            file_name = entry.get("file_name") if isinstance(entry, dict) else None
            if image_id is None or not isinstance(file_name, str) or not file_name:
                bad_entries += 1
                continue
            images[image_id] = file_name
        by_image: dict[int, list[str]] = {}
        # COCO order is by annotation id; entries without a usable id keep file order.
        numbered = [
            (_coco_id(a.get("id")) if isinstance(a, dict) else None, position, a)
            for position, a in enumerate(annotation_entries)
        ]
        numbered.sort(key=lambda item: (item[0] is None, item[0] or 0, item[1]))
        for _id, _position, annotation in numbered:
            image_id = _coco_id(annotation.get("image_id")) if isinstance(annotation, dict) else None
            caption = annotation.get("caption") if isinstance(annotation, dict) else None
            if image_id is None or not isinstance(caption, str):
                bad_entries += 1
                continue
            by_image.setdefault(image_id, []).append(caption)
        if bad_entries:
            stats.problems.append(
                f"{json_file}: {bad_entries} image or annotation entries without a usable id, "
                "file_name or caption skipped"
            )
        folders = _coco_image_folders(json_file)
        for image_id, texts in by_image.items():
            file_name = images.get(image_id)
            if file_name is None:
                stats.problems.append(f"{json_file}: annotation for unknown image id {image_id}")
                continue
            captions = unique_captions(texts)
            if not captions:
                continue
            image_file = next(
                (found for f in folders if (found := contained_file(f, file_name, base)) is not None), None
            )
            yield CaptionGroup(file_name, captions, f"coco:{json_file}", image_file=image_file)


READER = read_coco
