"""What every caption reader shares: the caption group it yields, walking a source tree
without leaving it (symlinks, ``../`` names, FIFOs refused), printable names and table columns."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from core import captions as caption_store
from core.imaging import IMAGE_EXTENSIONS
from core.inputs import regular_file_problem

#: A caption longer than this is not a caption (a pasted file, an attack): skipped, reported.
MAX_CAPTION_CHARS = caption_store.MAX_CAPTION_CHARS
FILE_NAME_COLUMNS = ("file_name", "filename", "file", "image", "image_path", "path")
TEXT_COLUMNS = ("text", "caption", "captions", "description")
#: Names longer than this are cut in reports (a parquet "name" may be megabytes).
MAX_REPORTED_NAME = 200


@dataclass
class CaptionGroup:
    """The captions a source gives for one image."""

    #: The image's path as the source names it (``/``-separated, relative to the source).
    name: str
    captions: list[str]
    #: ``"FORMAT:file the captions came from"``.
    origin: str
    #: The image file itself, when the source folder holds it.
    image_file: Path | None = None
    #: The image bytes, when the source embeds them (parquet).
    image_bytes: bytes | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: Who wrote the captions according to the source (its ``source`` column), if it says.
    written_by: str | None = None
    #: The caption kind the captions are values of (photo metadata holds several).
    kind: str = "caption"
    #: A table row's other text columns (a CaptionDesk export's column per kind), by column
    #: name; the import reads the library's kinds from them.
    columns: dict[str, str] = field(default_factory=dict)


#: Columns naming who wrote a row's caption (CaptionDesk exports: human / model / import).
SOURCE_COLUMN = "source"


def row_source(row: dict[str, Any]) -> str | None:
    value = row.get(SOURCE_COLUMN)
    return str(value).strip().lower() or None if value not in (None, "") else None


def walk(folder: Path) -> Iterator[tuple[Path, list[str]]]:
    """``(folder, file names)`` under *folder*, skipping hidden files and folders."""
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield Path(current), sorted(f for f in files if not f.startswith("."))


def image_files(folder: Path, problems: list[str] | None = None) -> Iterator[Path]:
    for current, files in walk(folder):
        for name in files:
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and not irregular(current / name, problems):
                yield current / name


def irregular(path: Path, problems: list[str] | None) -> bool:
    """Whether *path* is a FIFO, device or other non-regular file (one line in *problems*).

    Such a file is never opened: reading a FIFO blocks until something writes to it.
    A path that cannot be looked at is left to the reader, which reports it.
    """
    try:
        problem = regular_file_problem(path)
    except (OSError, ValueError):
        return False
    if problem is not None and problems is not None:
        problems.append(f"{readable_name(str(path))}: {problem}; skipped")
    return problem is not None


def relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.name


def source_root(src: Path) -> Path:
    """The tree an import may read: SRC itself, or the folder holding the SRC file."""
    return (src if src.is_dir() else src.parent).resolve()


def inside(path: Path, base: Path) -> bool:
    """Whether *path*, symlinks resolved, is *base* or inside it (*base* resolved)."""
    try:
        return path.resolve().is_relative_to(base)
    except (OSError, RuntimeError, ValueError):  # symlink loops, NUL in the name
        return False


def contained_file(folder: Path, name: str, base: Path) -> Path | None:
    """``folder / name`` when it is a regular file inside *base*; None for absolute or
    ``../`` names that lead out, links that leave, and anything that is not a file."""
    if not name or "\x00" in name or PurePosixPath(name).is_absolute() or os.path.isabs(name):
        return None
    candidate = folder / name
    if not inside(candidate, base):
        return None
    try:
        return candidate if candidate.is_file() else None
    except (OSError, ValueError):
        return None


def readable_name(name: str) -> str:
    """*name* as it can be printed: invalid UTF-8 escaped, shortened when huge."""
    text = name.encode("utf-8", "backslashreplace").decode("utf-8")
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= MAX_REPORTED_NAME else text[: MAX_REPORTED_NAME - 1] + "…"


def valid_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (JSON "\ud800", undecodable bytes)
        return False
    return True


def unique_captions(texts: Iterable[Any]) -> list[str]:
    """Stripped, non-empty, first occurrence kept, in order."""
    seen: set[str] = set()
    result = []
    for text in texts:
        if not isinstance(text, str):
            continue
        text = text.strip()
        if text and text not in seen:
            seen.add(text)
            result.append(text)
    return result


def other_columns(row: dict[str, Any], skip: Iterable[str | None], into: dict[str, str]) -> dict[str, str]:
    """Add *row*'s non-empty text cells outside *skip* to *into* (the first value of a column wins)."""
    skipped = set(skip)
    for column, value in row.items():
        if column not in skipped and isinstance(column, str) and isinstance(value, str) and value.strip():
            into.setdefault(column, value)
    return into


def pick_column(columns: Iterable[str], choices: tuple[str, ...]) -> str | None:
    lowered = {c.strip().lower(): c for c in columns if c}
    return next((lowered[c] for c in choices if c in lowered), None)
