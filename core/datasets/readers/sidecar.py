"""``photo.txt`` / ``photo.caption`` beside each image (kohya sd-scripts / OneTrainer style)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from core.datasets.readers.base import (
    MAX_CAPTION_CHARS,
    CaptionGroup,
    inside,
    irregular,
    relative,
    source_root,
    unique_captions,
    walk,
)
from core.imaging import IMAGE_EXTENSIONS
from core.inputs import NotARegularFile, name_key, open_regular

if TYPE_CHECKING:
    from core.datasets.import_stats import ImportStats


SIDECAR_EXTENSIONS = (".txt", ".caption")
#: Sidecar caption files larger than this are not read (room for the longest caption in
#: 4-byte UTF-8, a BOM and line ends: every exported caption file imports again).
MAX_CAPTION_FILE_BYTES = 4 * MAX_CAPTION_CHARS + 64


def _read_caption_file(caption_file: Path, base: Path) -> str:
    """A sidecar caption's text; OSError/ValueError saying why it is refused."""
    if not inside(caption_file, base):
        raise ValueError("a link leading outside the import folder; not read")
    with open_regular(caption_file, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_CAPTION_FILE_BYTES:
            raise ValueError(f"{size} bytes, more than a caption ({MAX_CAPTION_FILE_BYTES}); not read")
        data = handle.read(MAX_CAPTION_FILE_BYTES + 1)
    return data.decode("utf-8-sig")


def read_sidecars(src: Path, stats: ImportStats, *, lines_as_variants: bool = False) -> Iterator[CaptionGroup]:
    """``photo.txt`` / ``photo.caption`` beside each image under *src*.

    With *lines_as_variants* each line is one variant of the caption, as OneTrainer reads
    the file: the first becomes the caption, the others join its history as variants.
    """
    base = source_root(src)
    for folder, files in walk(src):
        # Compared as name_key: photo.jpg and its photo.txt may differ in Unicode form.
        names = {name_key(f): f for f in files}
        images = [
            f for f in files
            if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS and not irregular(folder / f, stats.problems)
        ]
        image_stems = {name_key(os.path.splitext(f)[0]) for f in images}
        for image_name in images:
            stem = os.path.splitext(image_name)[0]
            for extension in SIDECAR_EXTENSIONS:
                caption_name = names.get(name_key(stem + extension))
                if caption_name is None:
                    continue
                caption_file = folder / caption_name
                try:
                    text = _read_caption_file(caption_file, base)
                except NotARegularFile as exc:
                    stats.errors += 1
                    stats.problems.append(f"{caption_file}: {exc}; skipped")
                    break
                except OSError as exc:
                    stats.errors += 1
                    stats.problems.append(f"{caption_file}: cannot read ({exc.strerror or exc})")
                    break
                except ValueError as exc:  # UnicodeDecodeError included
                    stats.errors += 1
                    stats.problems.append(f"{caption_file}: {exc}")
                    break
                texts = unique_captions(text.splitlines() if lines_as_variants else [text])
                if texts:
                    yield CaptionGroup(
                        name=relative(folder / image_name, src),
                        captions=texts,
                        origin=f"sidecar:{caption_file}",
                        image_file=folder / image_name if inside(folder / image_name, base) else None,
                        details={"variants": True} if lines_as_variants else {},
                    )
                break  # .txt wins over .caption when both exist
        for name in files:
            stem, extension = os.path.splitext(name)
            if extension in SIDECAR_EXTENSIONS and name_key(stem) not in image_stems and name.casefold() not in (
                "readme.txt", "license.txt", "captions.txt"
            ):
                stats.note_unmatched(relative(folder / name, src) + " (no image beside it)")


READER = read_sidecars
