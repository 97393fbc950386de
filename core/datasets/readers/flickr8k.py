"""A Flickr8k-style ``captions.txt`` or ``Flickr8k.token.txt``: several captions per image."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from core.datasets.errors import CaptionImportError
from core.datasets.readers.base import CaptionGroup, image_files, inside, source_root, unique_captions, valid_text
from core.inputs import name_key, open_regular, regular_file_problem

if TYPE_CHECKING:
    from core.datasets.import_stats import ImportStats


FLICKR_FILE_NAMES = ("captions.txt", "Flickr8k.token.txt", "Flickr8k.lemma.token.txt")


def _find_file(src: Path, names: Iterable[str], what: str) -> Path:
    if src.is_file():
        return src
    for name in names:
        for candidate in (src / name, *sorted(src.glob(f"*/{name}"))):
            if candidate.is_file():
                return candidate
            if candidate.exists() and not candidate.is_dir():  # a FIFO or device by that name
                raise CaptionImportError(f"cannot import {candidate}: {regular_file_problem(candidate)}")
    raise CaptionImportError(f"no {what} found in {src}")


def _images_by_name(folder: Path, problems: list[str]) -> dict[str, Path | None]:
    """File name (as :func:`name_key`) → image path under *folder* (None where the name occurs twice)."""
    index: dict[str, Path | None] = {}
    for path in image_files(folder, problems):
        key = name_key(path.name)
        index[key] = None if key in index else path
    return index


def read_flickr8k(src: Path, stats: ImportStats) -> Iterator[CaptionGroup]:
    """Flickr8k ``captions.txt`` (CSV) or ``Flickr8k.token.txt`` (``name#n<TAB>text``)."""
    source = _find_file(src, FLICKR_FILE_NAMES, "captions.txt or Flickr8k.token.txt")
    grouped: dict[str, list[str]] = {}
    # surrogateescape: one line of bad UTF-8 is that line's problem, not the file's.
    with open_regular(source, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if not valid_text(line):
                stats.problems.append(f"{source}:{number}: not valid UTF-8, skipped")
                continue
            if "\t" in line:
                key, text = line.split("\t", 1)
                name = key.rsplit("#", 1)[0] if "#" in key else key
            else:
                # Kaggle's captions.txt: quoted or not, and captions contain commas.
                try:
                    fields = next(csv.reader([line]))
                except csv.Error as exc:
                    stats.problems.append(f"{source}:{number}: {exc}, skipped")
                    continue
                if len(fields) < 2:
                    stats.problems.append(f"{source}:{number}: not 'image,caption'")
                    continue
                name, text = fields[0], ",".join(fields[1:])
                if number == 1 and (name.strip().lower(), text.strip().lower()) == ("image", "caption"):
                    continue  # header
            grouped.setdefault(name.strip(), []).append(text)
    if not grouped:
        raise CaptionImportError(f"{source} holds no captions")
    base = source_root(src)
    images = {
        name: path for name, path in _images_by_name(source.parent, stats.problems).items()
        if path is not None and inside(path, base)
    }
    for name, texts in grouped.items():
        captions = unique_captions(texts)
        if captions:
            image_file = images.get(name_key(PurePosixPath(name).name))
            yield CaptionGroup(name, captions, f"flickr8k:{source}", image_file=image_file)


READER = read_flickr8k
