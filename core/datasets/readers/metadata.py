"""Captions already in the photos under SRC, each kind from its fields: XMP sidecar, XMP, IPTC, EXIF."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from core.datasets.errors import CaptionImportError
from core.datasets.readers.base import CaptionGroup, image_files, inside, relative, source_root

if TYPE_CHECKING:
    from core.datasets.import_stats import ImportStats


def read_photo_metadata(src: Path, stats: ImportStats) -> Iterator[CaptionGroup]:
    """One group per kind a photo under *src* holds (:func:`core.metadata.read_kinds`).

    Keywords come as one text, a keyword a line (``|`` hierarchy), as the library stores them.
    """
    from core.metadata import MetadataError, MetadataUnavailable, read_kinds

    base = source_root(src)
    files = [src] if src.is_file() else image_files(src, stats.problems)
    for image_file in files:
        if not inside(image_file, base):
            stats.problems.append(f"{image_file}: a link leading outside {base}; not read")
            continue
        try:
            found = read_kinds(image_file, within=base)
        except MetadataUnavailable as exc:
            raise CaptionImportError(str(exc)) from None
        except MetadataError as exc:
            stats.errors += 1
            stats.problems.append(str(exc))
            continue
        for kind, value in found.items():
            yield CaptionGroup(
                relative(image_file, src if src.is_dir() else src.parent),
                [value.value if isinstance(value.value, str) else "\n".join(value.value)],
                f"{value.field}:{value.location}",
                image_file=image_file,
                details={"field": value.field},
                kind=kind,
            )


READER = read_photo_metadata
