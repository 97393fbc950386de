"""Import captions from datasets and photo metadata into the library.

Sources (``import_captions(library, FORMAT, SRC)``):

``sidecar``
    a caption file beside each image under SRC: ``photo.txt`` or ``photo.caption``
    (kohya sd-scripts / OneTrainer style).
``flickr8k``
    a Flickr8k-style ``captions.txt`` (``image,caption`` CSV, or the original
    ``Flickr8k.token.txt`` with ``name#n<TAB>caption``): several captions per image.
``coco``
    COCO captions JSON (``images`` + ``annotations``): a file, or a folder holding them.
``imagefolder``
    every ``metadata.jsonl`` / ``metadata.csv`` under SRC (Hugging Face imagefolder).
``csv``
    a CSV with a file-name and a caption column (CaptionDesk's ``captions.csv`` export).
``parquet``
    parquet files with an ``image`` (bytes) column and ``text`` (CaptionDesk's export,
    Hub datasets); embedded images are matched by content.
``metadata``
    captions already in the photos under SRC: XMP sidecar, XMP, IPTC, EXIF.

Rules:

* Each caption is stored with ``source="import"`` (``"human"`` with *verified*) and an
  ``origin`` of ``"FORMAT:file it came from"`` (for photo metadata the field instead:
  ``"xmp:…"``, ``"iptc:…"``, ``"exif:…"``); details (row name, position among the
  image's captions, how it was matched) go in the caption's settings.
* With *honour_source* (CLI ``--keep-source``), a row's own ``source`` column (CaptionDesk's
  csv / parquet / imagefolder exports carry one) decides instead: ``human`` rows are
  stored verified, every other row (``model``, ``import``) as an unverified import, so an
  export → import into another library keeps exactly the verified set.  Rows without the
  column fall back to *verified*.
* A human caption that is current is never replaced: the import is stored beside it —
  unless the user asks with *replace* (CLI ``--replace``): then the import is taken as the
  person's own edit made in another tool (stored verified, whatever *verified* says) and
  becomes current, the replaced caption staying in the history.  Rows that
  *honour_source* marks as a model's never replace a person's caption.
* A caption whose text is the current one is unchanged and adds nothing.  Texts are
  compared as the sidecar export writes them (:func:`core.export.export_caption_line`:
  one line), so a multi-line caption exported and read back unedited adds no row.  A
  verified import of the current text of a caption no person has checked yet adds a
  person's copy of it (the library's own text, line breaks kept), as Accept does — but
  not under *replace*, which takes only edits: an untouched model caption stays the model's.
* With several captions for one image, the first becomes current and the others are
  kept in its history, in order.
* Importing the same source again adds nothing (same text from the same origin is
  skipped).
* With *dry_run* nothing is written and no job is recorded: the stats count what the
  import would do (the GUI shows how many people's captions it would replace).
* Hostile input is reported, never fatal: a row that cannot be used (bad UTF-8, a
  lone surrogate, a caption over :data:`MAX_CAPTION_CHARS`, a bad COCO id) is one
  ``problems`` line and is skipped, the good rows are kept; a file that cannot be parsed
  at all is one line.  Nothing outside the source tree (SRC, or the folder holding the
  SRC file) and the library folders is opened: symlinks and ``../`` or absolute names
  leading out are refused.  A FIFO, device or other non-regular file (a FIFO named
  ``metadata.jsonl``, a sidecar, a photo) is never opened: one problem line names it.
* Rows are matched to library images by: the image file's own location when SRC is
  (inside) a library folder; the path as the source names it against root-relative
  paths (longest matching tail first); the file name when unique; finally the content
  fingerprint when SRC holds the image itself.  Paths and names match exactly first,
  then under Unicode normalization (NFC: macOS writes ``café`` decomposed).  Names an
  export converted or flattened (``IMG_1.HEIC.jpg``, kohya's ``album__scan.tif.png``) are
  also tried as the library name they came from (:func:`core.export.library_name_candidates`).
  Unmatched and ambiguous rows are counted and the first few named.
* Rows naming different paths that reach one photo only by its file name are ambiguous:
  none of them is imported, and each is one problem line naming the other row.  A row
  that reaches by file name a photo another row names by path, location or content is
  not imported either (that other row is).  Name-only matches are therefore written
  once the whole source is read; a cancelled import writes none of them.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import insert, select

from core import captions as caption_store
from core.db import Database
from core.errors import UserFacingError
from core.export import MANIFEST_NAME, export_caption_line, library_name_candidates
from core.fingerprint import fingerprint_bytes, fingerprint_file
from core.imaging import IMAGE_EXTENSIONS
from core.inputs import NotARegularFile, name_key, open_regular, regular_file_problem
from core.jobs import NEVER_CANCELLED, CancelToken, JobStats, Progress, ProgressCallback, Throttle, no_progress
from core.models import Caption, CaptionSource, Image, LibraryRoot

if TYPE_CHECKING:
    from core.library import Library

IMPORT_FORMATS = ("sidecar", "flickr8k", "coco", "imagefolder", "csv", "parquet", "metadata")
SIDECAR_EXTENSIONS = (".txt", ".caption")
FLICKR_FILE_NAMES = ("captions.txt", "Flickr8k.token.txt", "Flickr8k.lemma.token.txt")
FILE_NAME_COLUMNS = ("file_name", "filename", "file", "image", "image_path", "path")
TEXT_COLUMNS = ("text", "caption", "captions", "description")
#: Matched groups written per transaction.
WRITE_BATCH = 200
#: How many unmatched names the stats keep for the report.
UNMATCHED_EXAMPLES = 10
#: A caption longer than this is not a caption (a pasted file, an attack): skipped, reported.
MAX_CAPTION_CHARS = caption_store.MAX_CAPTION_CHARS
#: Sidecar caption files larger than this are not read (room for the longest caption in
#: 4-byte UTF-8, a BOM and line ends: every exported caption file imports again).
MAX_CAPTION_FILE_BYTES = 4 * MAX_CAPTION_CHARS + 64
#: CSV fields may be this long (Python's default of 128 KiB rejected whole files).
MAX_CSV_FIELD = 16 * 1024 * 1024
#: Names longer than this are cut in reports (a parquet "name" may be megabytes).
MAX_REPORTED_NAME = 200


class CaptionImportError(UserFacingError):
    """The source cannot be imported as asked (the message says why)."""


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


#: Columns naming who wrote a row's caption (CaptionDesk exports: human / model / import).
SOURCE_COLUMN = "source"


def _row_source(row: dict[str, Any]) -> str | None:
    value = row.get(SOURCE_COLUMN)
    return str(value).strip().lower() or None if value not in (None, "") else None


@dataclass
class ImportStats(JobStats):
    """What an import did; ``problems`` lists rows and files that could not be used."""

    TITLE: ClassVar[str] = "Import"

    format: str
    #: The captions were written by people (stored as verified).
    verified: bool = False
    #: Imported captions replace a person's current caption (the user asked).
    replace: bool = False
    #: Nothing was written: the counts say what the import would do.
    dry_run: bool = False
    #: Images the source named (caption groups read).
    rows: int = 0
    #: Caption rows added to the library.
    imported: int = 0
    #: Added captions that became current in place of no caption, or a model's or an import.
    current: int = 0
    #: Added captions that became current in place of a person's caption (with *replace*).
    replaced: int = 0
    #: Added captions left beside a current human caption (never overwritten).
    kept_human: int = 0
    #: Captions the library already had (same text from the same origin, or current).
    unchanged: int = 0
    unmatched: int = 0
    ambiguous: int = 0
    errors: int = 0
    unmatched_names: list[str] = field(default_factory=list)
    #: Images whose current caption this import set (``current`` counts each once).
    made_current: set[int] = field(default_factory=set, repr=False)

    def counts(self) -> dict[str, int]:
        # Every problem is a row or file that could not be used: a failed item, whether
        # the reader counted it as an error or only reported it and skipped it.
        return {**super().counts(), "errors": max(self.errors, len(self.problems))}

    def note_unmatched(self, name: str, *, ambiguous: bool = False) -> None:
        if ambiguous:
            self.ambiguous += 1
        else:
            self.unmatched += 1
        if len(self.unmatched_names) < UNMATCHED_EXAMPLES:
            self.unmatched_names.append(readable_name(name) + (" (ambiguous)" if ambiguous else ""))

    def summary(self) -> str:
        kind = "verified captions" if self.verified else "captions"
        replaced = f"{self.replaced} replacing a person's caption, " if self.replace else ""
        if self.dry_run:
            head = f"{self.TITLE} check {'cancelled' if self.cancelled else 'finished'} (nothing written)"
        else:
            head = f"{self.TITLE} {'cancelled' if self.cancelled else 'finished'}"
        return (
            f"{head}: {self.rows} images named, {self.imported} {kind} added "
            f"({self.current} now current, {replaced}{self.kept_human} kept beside a person's caption), "
            f"{self.unchanged} already there, {self.unmatched} unmatched, {self.ambiguous} ambiguous"
        )


# -- reading sources ------------------------------------------------------------------


def _walk(folder: Path) -> Iterator[tuple[Path, list[str]]]:
    """``(folder, file names)`` under *folder*, skipping hidden files and folders."""
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield Path(current), sorted(f for f in files if not f.startswith("."))


def _image_files(folder: Path, problems: list[str] | None = None) -> Iterator[Path]:
    for current, files in _walk(folder):
        for name in files:
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and not _irregular(current / name, problems):
                yield current / name


def _irregular(path: Path, problems: list[str] | None) -> bool:
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


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.name


def _source_root(src: Path) -> Path:
    """The tree an import may read: SRC itself, or the folder holding the SRC file."""
    return (src if src.is_dir() else src.parent).resolve()


def _inside(path: Path, base: Path) -> bool:
    """Whether *path*, symlinks resolved, is *base* or inside it (*base* resolved)."""
    try:
        return path.resolve().is_relative_to(base)
    except (OSError, RuntimeError, ValueError):  # symlink loops, NUL in the name
        return False


def _contained_file(folder: Path, name: str, base: Path) -> Path | None:
    """``folder / name`` when it is a regular file inside *base*; None for absolute or
    ``../`` names that lead out, links that leave, and anything that is not a file."""
    if not name or "\x00" in name or PurePosixPath(name).is_absolute() or os.path.isabs(name):
        return None
    candidate = folder / name
    if not _inside(candidate, base):
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


def _valid_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (JSON "\ud800", undecodable bytes)
        return False
    return True


def _read_caption_file(caption_file: Path, base: Path) -> str:
    """A sidecar caption's text; OSError/ValueError saying why it is refused."""
    if not _inside(caption_file, base):
        raise ValueError("a link leading outside the import folder; not read")
    with open_regular(caption_file, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_CAPTION_FILE_BYTES:
            raise ValueError(f"{size} bytes, more than a caption ({MAX_CAPTION_FILE_BYTES}); not read")
        data = handle.read(MAX_CAPTION_FILE_BYTES + 1)
    return data.decode("utf-8-sig")


def _unique_captions(texts: Iterable[Any]) -> list[str]:
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


def read_sidecars(src: Path, stats: ImportStats, *, lines_as_variants: bool = False) -> Iterator[CaptionGroup]:
    """``photo.txt`` / ``photo.caption`` beside each image under *src*.

    With *lines_as_variants* each line is one variant of the caption, as OneTrainer reads
    the file: the first becomes the caption, the others join its history as variants.
    """
    base = _source_root(src)
    for folder, files in _walk(src):
        # Compared as name_key: photo.jpg and its photo.txt may differ in Unicode form.
        names = {name_key(f): f for f in files}
        images = [
            f for f in files
            if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS and not _irregular(folder / f, stats.problems)
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
                texts = _unique_captions(text.splitlines() if lines_as_variants else [text])
                if texts:
                    yield CaptionGroup(
                        name=_relative(folder / image_name, src),
                        captions=texts,
                        origin=f"sidecar:{caption_file}",
                        image_file=folder / image_name if _inside(folder / image_name, base) else None,
                        details={"variants": True} if lines_as_variants else {},
                    )
                break  # .txt wins over .caption when both exist
        for name in files:
            stem, extension = os.path.splitext(name)
            if extension in SIDECAR_EXTENSIONS and name_key(stem) not in image_stems and name.casefold() not in (
                "readme.txt", "license.txt", "captions.txt"
            ):
                stats.note_unmatched(_relative(folder / name, src) + " (no image beside it)")


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
    for path in _image_files(folder, problems):
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
            if not _valid_text(line):
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
    base = _source_root(src)
    images = {
        name: path for name, path in _images_by_name(source.parent, stats.problems).items()
        if path is not None and _inside(path, base)
    }
    for name, texts in grouped.items():
        captions = _unique_captions(texts)
        if captions:
            image_file = images.get(name_key(PurePosixPath(name).name))
            yield CaptionGroup(name, captions, f"flickr8k:{source}", image_file=image_file)


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
    base = _source_root(src)
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
            captions = _unique_captions(texts)
            if not captions:
                continue
            image_file = next(
                (found for f in folders if (found := _contained_file(f, file_name, base)) is not None), None
            )
            yield CaptionGroup(file_name, captions, f"coco:{json_file}", image_file=image_file)


def _pick_column(columns: Iterable[str], choices: tuple[str, ...]) -> str | None:
    lowered = {c.strip().lower(): c for c in columns if c}
    return next((lowered[c] for c in choices if c in lowered), None)


def _rows_from_table(
    rows: Iterable[dict[str, Any]], columns: Iterable[str], table_file: Path, fmt: str, stats: ImportStats,
    base: Path,
) -> Iterator[CaptionGroup]:
    """Groups from a table with a file-name and a caption column (paths relative to it)."""
    columns = list(columns)
    name_column = _pick_column(columns, FILE_NAME_COLUMNS)
    text_column = _pick_column(columns, TEXT_COLUMNS)
    if name_column is None or text_column is None:
        stats.errors += 1
        stats.problems.append(
            f"{table_file}: needs a file name column ({', '.join(FILE_NAME_COLUMNS)}) "
            f"and a caption column ({', '.join(TEXT_COLUMNS)})"
        )
        return
    grouped: dict[str, list[Any]] = {}
    written_by: dict[str, str | None] = {}
    for row in rows:
        name = row.get(name_column)
        if not name or not isinstance(name, (str, int)):
            continue
        value = row.get(text_column)
        texts = value if isinstance(value, list) else [value]
        key = str(name).replace("\\", "/")
        grouped.setdefault(key, []).extend(texts)
        written_by.setdefault(key, _row_source(row))  # the first caption's row decides
    for name, texts in grouped.items():
        captions = _unique_captions(texts)
        if not captions:
            continue
        yield CaptionGroup(
            name, captions, f"{fmt}:{table_file}", image_file=_contained_file(table_file.parent, name, base),
            written_by=written_by.get(name),
        )


def _read_jsonl(path: Path, stats: ImportStats) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    columns: dict[str, None] = {}
    # surrogateescape: a line of bad UTF-8 is that line's problem, not the file's.
    with open_regular(path, encoding="utf-8-sig", errors="surrogateescape") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if not _valid_text(line):
                stats.problems.append(f"{path}:{number}: not valid UTF-8, skipped")
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                stats.problems.append(f"{path}:{number}: not valid JSON, skipped")
                continue
            if isinstance(row, dict):
                rows.append(row)
                columns.update(dict.fromkeys(row))
    return rows, list(columns)


def _read_csv(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    # Long captions are fine (over-long ones are skipped per row later); the limit is
    # process-wide, so it is put back afterwards.  surrogateescape: rows with bad UTF-8
    # are skipped one by one instead of the whole file.
    previous_limit = csv.field_size_limit(MAX_CSV_FIELD)
    try:
        with open_regular(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            return rows, [c for c in reader.fieldnames or [] if isinstance(c, str)]
    finally:
        csv.field_size_limit(previous_limit)


def _rows_from_tables(
    src: Path, tables: list[Path], read: Callable[[Path], tuple[list[dict[str, Any]], list[str]]], fmt: str,
    stats: ImportStats,
) -> Iterator[CaptionGroup]:
    """Caption groups from each table *read* parses; a table that cannot be read is one recorded error."""
    base = _source_root(src)
    for table in tables:
        try:
            rows, columns = read(table)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            stats.errors += 1
            stats.problems.append(f"{table}: cannot read ({exc})")
            continue
        yield from _rows_from_table(rows, columns, table, fmt, stats, base)


def read_imagefolder(src: Path, stats: ImportStats) -> Iterator[CaptionGroup]:
    """Every ``metadata.jsonl`` / ``metadata.csv`` under *src*."""
    tables = [src] if src.is_file() else [
        folder / name for folder, files in _walk(src) for name in files if name in ("metadata.jsonl", "metadata.csv")
    ]
    if not tables:
        raise CaptionImportError(f"no metadata.jsonl or metadata.csv found under {src}")
    yield from _rows_from_tables(
        src, tables, lambda t: _read_jsonl(t, stats) if t.suffix == ".jsonl" else _read_csv(t), "imagefolder", stats
    )


def read_csv_file(src: Path, stats: ImportStats) -> Iterator[CaptionGroup]:
    """A CSV file (or every ``*.csv`` in a folder) with file-name and caption columns."""
    tables = [src] if src.is_file() else sorted(src.glob("*.csv"))
    if not tables:
        raise CaptionImportError(f"no .csv file found in {src}")
    yield from _rows_from_tables(src, tables, _read_csv, "csv", stats)


def read_parquet(src: Path, stats: ImportStats) -> Iterator[CaptionGroup]:
    """Parquet files with ``text`` and an ``image`` struct (bytes, path) or ``file_name``."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise CaptionImportError("importing parquet needs pyarrow: pip install pyarrow") from None
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*.parquet") if not p.name.startswith("."))
    if not files:
        raise CaptionImportError(f"no .parquet file found under {src}")
    for parquet_file in files:
        if _irregular(parquet_file, stats.problems):
            continue
        try:
            reader = pq.ParquetFile(parquet_file)
            columns = reader.schema_arrow.names
            text_column = _pick_column(columns, TEXT_COLUMNS)
            name_column = _pick_column(columns, FILE_NAME_COLUMNS)
            if text_column is None or (name_column is None and "image" not in columns):
                stats.errors += 1
                stats.problems.append(f"{parquet_file}: needs a caption column and an image or file name column")
                continue
            wanted = [c for c in {text_column, name_column, "image", SOURCE_COLUMN} if c in columns]
            row_number = 0
            # Small batches: each row may hold a photo's bytes.
            for batch in reader.iter_batches(batch_size=64, columns=wanted):
                for row in batch.to_pylist():
                    row_number += 1
                    name, image_bytes = _parquet_name_and_bytes(row, name_column)
                    value = row.get(text_column)
                    captions = _unique_captions(value if isinstance(value, list) else [value])
                    if not captions:
                        continue
                    yield CaptionGroup(
                        name.replace("\\", "/") or f"row {row_number}",
                        captions,
                        f"parquet:{parquet_file}",
                        image_bytes=image_bytes,
                        written_by=_row_source(row),
                    )
        except (OSError, ValueError, pa.ArrowException) as exc:  # ArrowInvalid is a ValueError
            stats.errors += 1
            stats.problems.append(f"{parquet_file}: cannot read ({exc})")


def _parquet_name_and_bytes(row: dict[str, Any], name_column: str | None) -> tuple[str, bytes | None]:
    """The row's image name and embedded bytes.

    ``image`` is the HF ``Image`` struct ``{bytes, path}`` (its ``path`` is the name), or
    plain bytes; a ``file_name``-like column wins for the name.  Never the printed dict.
    """
    image = row.get("image")
    image_bytes: bytes | None = None
    image_path: Any = None
    if isinstance(image, dict):
        image_bytes, image_path = image.get("bytes"), image.get("path")
    elif isinstance(image, bytes):
        image_bytes = image
    name: Any = row.get(name_column) if name_column and name_column != "image" else None
    if isinstance(name, dict):
        name = name.get("path")
    if not isinstance(name, str) or not name:
        name = image_path if isinstance(image_path, str) else ""
    if not isinstance(image_bytes, bytes):
        image_bytes = None
    return name, image_bytes


def read_photo_metadata(src: Path, stats: ImportStats) -> Iterator[CaptionGroup]:
    """Captions stored in the photos under *src* (XMP sidecar, XMP, IPTC, EXIF)."""
    from core.metadata import MetadataError, MetadataUnavailable, read_caption

    base = _source_root(src)
    files = [src] if src.is_file() else _image_files(src, stats.problems)
    for image_file in files:
        if not _inside(image_file, base):
            stats.problems.append(f"{image_file}: a link leading outside {base}; not read")
            continue
        try:
            found = read_caption(image_file, within=base)
        except MetadataUnavailable as exc:
            raise CaptionImportError(str(exc)) from None
        except MetadataError as exc:
            stats.errors += 1
            stats.problems.append(str(exc))
            continue
        if found is not None:
            yield CaptionGroup(
                _relative(image_file, src if src.is_dir() else src.parent),
                [found.text],
                f"{found.field}:{found.location}",
                image_file=image_file,
                details={"field": found.field},
            )


_READERS = {
    "sidecar": read_sidecars,
    "flickr8k": read_flickr8k,
    "coco": read_coco,
    "imagefolder": read_imagefolder,
    "csv": read_csv_file,
    "parquet": read_parquet,
    "metadata": read_photo_metadata,
}


# -- matching -------------------------------------------------------------------------


class ImageMatcher:
    """Finds the library image a source row means (see the module doc for the order)."""

    def __init__(self, db: Database) -> None:
        self.by_root_path: dict[tuple[str, str], int] = {}
        self.by_rel_path: dict[str, list[int]] = {}
        self.by_name: dict[str, list[int]] = {}
        # The non-ASCII paths and names again, as name_key: the fallback after an exact match.
        self.by_rel_path_key: dict[str, list[int]] = {}
        self.by_name_key: dict[str, list[int]] = {}
        self.by_fingerprint: dict[str, list[int]] = {}
        with db.read() as session:
            self.roots = [(Path(path), path) for path in session.scalars(select(LibraryRoot.path))]
            rows = session.execute(
                select(Image.id, LibraryRoot.path, Image.rel_path, Image.fingerprint)
                .join(LibraryRoot, LibraryRoot.id == Image.root_id)
                .execution_options(yield_per=5000)
            )
            for image_id, root_path, rel_path, fingerprint in rows:
                self.by_root_path[(root_path, rel_path)] = image_id
                self.by_rel_path.setdefault(rel_path, []).append(image_id)
                file_name = PurePosixPath(rel_path).name
                self.by_name.setdefault(file_name, []).append(image_id)
                if not rel_path.isascii():
                    self.by_rel_path_key.setdefault(name_key(rel_path), []).append(image_id)
                    self.by_name_key.setdefault(name_key(file_name), []).append(image_id)
                self.by_fingerprint.setdefault(fingerprint, []).append(image_id)

    def _in_library(self, file: Path) -> int | None:
        try:
            resolved = file.resolve()
        except OSError:
            return None
        for root, root_text in self.roots:
            if resolved.is_relative_to(root):
                return self.by_root_path.get((root_text, resolved.relative_to(root).as_posix()))
        return None

    @staticmethod
    def _name_variants(name: str) -> list[PurePosixPath]:
        while name.startswith("./"):
            name = name[2:]
        return [PurePosixPath(candidate) for candidate in library_name_candidates(name)]

    @staticmethod
    def _ids(exact: dict[str, list[int]], by_key: dict[str, list[int]], name: str) -> list[int]:
        """The images *name* means: its exact spelling first, else any Unicode form of it."""
        ids = exact.get(name)
        if ids or name.isascii():
            return ids or []
        key = name_key(name)
        return list(dict.fromkeys([*exact.get(key, []), *by_key.get(key, [])]))

    def match(self, group: CaptionGroup) -> tuple[int | None, str]:
        """``(image id, how)``; id None with how ``"unmatched"`` or ``"ambiguous"``."""
        if group.image_file is not None:
            image_id = self._in_library(group.image_file)
            if image_id is not None:
                return image_id, "location"
        ambiguous = False
        for variant in self._name_variants(group.name):
            parts = variant.parts
            # The longest tail of the source's path that is a root-relative path.
            for start in range(len(parts) - 1):
                ids = self._ids(self.by_rel_path, self.by_rel_path_key, "/".join(parts[start:]))
                if ids:
                    if len(ids) == 1:
                        return ids[0], "path"
                    ambiguous = True
                    break
            if not ambiguous and parts:
                ids = self._ids(self.by_name, self.by_name_key, parts[-1])
                if len(ids) == 1:
                    return ids[0], "name"
                ambiguous = ambiguous or len(ids) > 1
        fingerprint = self._fingerprint(group)
        if fingerprint is not None:
            ids = self.by_fingerprint.get(fingerprint, [])
            if len(ids) == 1:
                return ids[0], "fingerprint"
            ambiguous = ambiguous or len(ids) > 1
        return None, "ambiguous" if ambiguous else "unmatched"

    @staticmethod
    def _fingerprint(group: CaptionGroup) -> str | None:
        try:
            if group.image_file is not None:
                return fingerprint_file(group.image_file)
            if group.image_bytes:
                return fingerprint_bytes(group.image_bytes)  # same algorithm, no file written
        except OSError:
            return None
        return None


# -- writing --------------------------------------------------------------------------


def _group_verified(group: CaptionGroup, verified: bool, honour_source: bool) -> bool:
    """Whether *group*'s captions are stored as a person's (see the module doc)."""
    if honour_source and group.written_by is not None:
        return group.written_by == CaptionSource.HUMAN.value
    return verified


#: What an import does with a source's first caption for an image (the one that may become current).
UNCHANGED, CURRENT, REPLACED, KEPT_HUMAN = "unchanged", "current", "replaced", "kept_human"


def _first_caption_outcome(
    current: tuple[str, str] | None, text: str, seen: bool, verified: bool, replace: bool
) -> tuple[str, str]:
    """``(outcome, text to store)`` for a source's first caption of an image.

    *current* is the image's current ``(text, source)``; *seen* whether the library already
    has this text from this origin.  The one place the rules in the module doc decide, so a
    dry run counts exactly what the import does.
    """
    human_current = current is not None and current[1] == CaptionSource.HUMAN
    if current is not None and export_caption_line(current[0]) == export_caption_line(text):
        # Under --replace only edits count: an untouched model caption stays the model's.
        if human_current or not verified or replace:
            return UNCHANGED, text
        return CURRENT, current[0]  # a person vouches for the caption as it stands in the library
    if human_current and verified and replace:
        return REPLACED, text
    if seen:
        return UNCHANGED, text
    return (KEPT_HUMAN if human_current else CURRENT), text


def _store_batch(
    db: Database, batch: list[tuple[int, str, CaptionGroup]], fmt: str, verified: bool, stats: ImportStats,
    honour_source: bool = False, *, replace: bool = False, dry_run: bool = False,
) -> None:
    """Add one batch of matched groups in one transaction (see the rules in the module doc).

    With *dry_run* the same decisions are made and counted, in a read transaction that
    writes nothing.
    """
    image_ids = list({image_id for image_id, _how, _group in batch})
    import_verified = verified
    with (db.read() if dry_run else db.write()) as session:
        known: dict[int, set[tuple[str, str | None, str]]] = {i: set() for i in image_ids}
        current: dict[int, tuple[str, str]] = {}
        for image_id, text, origin, caption_source, is_current in session.execute(
            select(Caption.image_id, Caption.text, Caption.origin, Caption.source, Caption.is_current).where(
                Caption.image_id.in_(image_ids)
            )
        ):
            known[image_id].add((export_caption_line(text), origin, caption_source))
            if is_current:
                current[image_id] = (text, caption_source)
        # Further captions (Flickr8k and COCO have five per image) only join the history:
        # one bulk insert for the batch instead of an ORM flush per row, which was far slower.
        history_rows: list[dict[str, Any]] = []
        for image_id, how, group in batch:
            verified = _group_verified(group, import_verified, honour_source)
            source = (CaptionSource.HUMAN if verified else CaptionSource.IMPORT).value
            for index, text in enumerate(group.captions):
                key = (export_caption_line(text), group.origin, source)
                details = {
                    "format": fmt,
                    "name": group.name,
                    "index": index,
                    "count": len(group.captions),
                    "matched_by": how,
                    **group.details,
                }
                if group.written_by is not None:
                    details["written_by"] = group.written_by
                if index == 0:
                    outcome, text = _first_caption_outcome(
                        current.get(image_id), text, key in known[image_id], verified, replace
                    )
                    if outcome == UNCHANGED:
                        stats.unchanged += 1
                        continue
                    if not dry_run:
                        caption_store.add_import_caption(
                            session, image_id, text, origin=group.origin, details=details, verified=verified,
                            replace=outcome == REPLACED,
                        )
                    if outcome == KEPT_HUMAN:
                        stats.kept_human += 1
                    else:
                        if image_id not in stats.made_current:  # two rows for one photo count once
                            stats.replaced += outcome == REPLACED
                            stats.current += outcome == CURRENT
                            stats.made_current.add(image_id)
                        current[image_id] = (text, source)
                elif key in known[image_id] or (
                    # A variant the photo already has (from another export of it) is not added twice.
                    group.details.get("variants") and any(k[0] == key[0] for k in known[image_id])
                ):
                    stats.unchanged += 1
                    continue
                else:
                    history_rows.append(
                        {
                            "image_id": image_id, "text": text, "source": source, "is_current": False,
                            "origin": group.origin, "settings": details,
                        }
                    )
                known[image_id].add(key)
                stats.imported += 1
        if history_rows and not dry_run:
            session.execute(insert(Caption), history_rows)


def import_captions(
    library: Library,
    fmt: str,
    src: Path | str,
    *,
    verified: bool = False,
    honour_source: bool = False,
    replace: bool = False,
    lines_as_variants: bool = False,
    dry_run: bool = False,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken = NEVER_CANCELLED,
) -> ImportStats:
    """Import captions from *src* in format *fmt* into *library* (see the module doc).

    With *replace* the imported captions are a person's (verified) and replace a person's
    current caption.  *lines_as_variants* (sidecar only) reads each line of a caption file as
    one variant (see :func:`read_sidecars`).  With *dry_run* nothing is written and no job is
    recorded: the stats count what the import would do.  Raises :class:`CaptionImportError` when *src* is not
    such a source.  Batches are committed as they go: a cancelled import keeps what it
    stored.  Recorded as an ``import`` job.
    """
    reader = _READERS.get(fmt)
    if reader is None:
        raise CaptionImportError(f"unknown import format {fmt!r}; choose one of {', '.join(IMPORT_FORMATS)}")
    source = Path(src).expanduser().absolute()
    if not source.exists():
        raise CaptionImportError(f"not found: {source}")
    if not source.is_dir() and (problem := regular_file_problem(source)) is not None:
        raise CaptionImportError(f"cannot import {source}: {problem}")
    if lines_as_variants and fmt != "sidecar":
        raise CaptionImportError("--lines-as-variants is an option of the sidecar format")
    verified = verified or replace  # a replacement is a person's edit made elsewhere
    stats = ImportStats(format=fmt, verified=verified, replace=replace, dry_run=dry_run)
    db: Database = library.db
    groups = read_sidecars(source, stats, lines_as_variants=True) if lines_as_variants else reader(source, stats)
    # Read the first group before recording a job: a source that is not of this format
    # is the user's mistake (CaptionImportError), not a failed job.
    first = next(groups, None)
    pending = [first] if first is not None else []

    def import_all(report: Callable[..., None]) -> None:
        matcher = ImageMatcher(db)
        batch: list[tuple[int, str, CaptionGroup]] = []
        verb = "Checking" if dry_run else "Importing"
        claims = _NameClaims()
        for group in _chain(pending, groups):
            if cancel.is_set():
                stats.cancelled = True
                break
            stats.rows += 1
            if not _usable_group(group, stats):
                continue
            image_id, how = matcher.match(group)
            if image_id is None:
                stats.note_unmatched(group.name, ambiguous=how == "ambiguous")
            elif claims.add(image_id, how, group):
                batch.append((image_id, how, group))
                if len(batch) >= WRITE_BATCH:
                    _store_batch(db, batch, fmt, verified, stats, honour_source, replace=replace, dry_run=dry_run)
                    batch.clear()
            report(stats.rows, None, f"{verb} {fmt}")
        if not stats.cancelled:
            # Every row is read: the name-only matches that no other row contradicts are safe.
            for item in claims.resolve(stats):
                batch.append(item)
                if len(batch) >= WRITE_BATCH:
                    _store_batch(db, batch, fmt, verified, stats, honour_source, replace=replace, dry_run=dry_run)
                    batch.clear()
                    if cancel.is_set():
                        stats.cancelled = True
                        break
                    report(stats.rows, None, f"{verb} {fmt}")
        if batch:
            _store_batch(db, batch, fmt, verified, stats, honour_source, replace=replace, dry_run=dry_run)
        report(stats.rows, None, f"{verb} cancelled" if stats.cancelled else f"{verb} finished", force=True)

    if dry_run:
        throttle = Throttle()

        def report(done: int, total: int | None, message: str, *, force: bool = False) -> None:
            if force or throttle.ready():
                progress(Progress(done, total, message, stats.counts()))

        import_all(report)
        return stats
    params = {
        "format": fmt, "src": str(source), "verified": verified, "honour_source": honour_source, "replace": replace,
        "lines_as_variants": lines_as_variants,
    }
    with library.job("import", params, stats, progress) as run:
        import_all(run.progress)
    return stats


class _NameClaims:
    """Rows matched only by the photo's file name, held back until every row is read.

    Two rows naming different paths (``x/dog.jpg``, ``y/dog.jpg``) that both land on the
    library's one ``dog.jpg`` by file name are ambiguous: neither is imported, and each
    gets one problem line naming the other.  A row matched by name to a photo that
    another row names by its path, location or content is not imported either.
    """

    def __init__(self) -> None:
        self.by_name: dict[int, list[CaptionGroup]] = {}
        #: The first row matched by something stronger than the name, per image.
        self.strong: dict[int, CaptionGroup] = {}

    def add(self, image_id: int, how: str, group: CaptionGroup) -> bool:
        """Record a matched row; True when it can be written now (not a name-only match)."""
        if how != "name":
            self.strong.setdefault(image_id, group)
            return True
        group.image_bytes = None  # matched: an embedded photo is not needed any more
        self.by_name.setdefault(image_id, []).append(group)
        return False

    def resolve(self, stats: ImportStats) -> Iterator[tuple[int, str, CaptionGroup]]:
        """The held-back rows to write; the contradicted ones become problem lines."""
        for image_id, groups in self.by_name.items():
            rows = list(dict.fromkeys(_row_label(g) for g in groups))  # a path named twice is one row
            strong = self.strong.get(image_id)
            if strong is None and len(rows) == 1:
                yield from ((image_id, "name", g) for g in groups)
                continue
            photo = readable_name(PurePosixPath(groups[0].name).name)
            for row in rows:
                stats.ambiguous += 1
                if strong is not None:
                    stats.problems.append(
                        f"{row}: matches the photo '{photo}' only by its file name, while "
                        f"{_row_label(strong)} names that photo by its path or content; not imported"
                    )
                    continue
                others = [r for r in rows if r != row]
                more = f" and {len(others) - 1} more" if len(others) > 1 else ""
                stats.problems.append(
                    f"{row}: matches the photo '{photo}' only by its file name, as does {others[0]}{more}; "
                    "ambiguous, none of these rows is imported"
                )


def _row_label(group: CaptionGroup) -> str:
    """A row as problem lines name it: ``FORMAT:file ('path as the source names it')``."""
    return f"{group.origin} ('{readable_name(group.name)}')"


def _usable_group(group: CaptionGroup, stats: ImportStats) -> bool:
    """Drop the captions no library can hold (one problem line each); False if none is left.

    Shared by every format, so a lone surrogate or a megabyte "caption" is a skipped row
    wherever it comes from, never a failed batch.
    """
    if not _valid_text(group.name):
        group.name = readable_name(group.name)
    if not _valid_text(group.origin):  # a file name with bytes that are not UTF-8
        group.origin = group.origin.encode("utf-8", "backslashreplace").decode("utf-8")
    kept = []
    for text in group.captions:
        if not _valid_text(text):
            stats.problems.append(f"{group.origin} ({readable_name(group.name)}): caption is not valid UTF-8, skipped")
        elif len(text) > MAX_CAPTION_CHARS:
            stats.problems.append(
                f"{group.origin} ({readable_name(group.name)}): caption of {len(text)} characters "
                f"(more than {MAX_CAPTION_CHARS}), skipped"
            )
        else:
            kept.append(text)
    if not kept:
        stats.errors += 1
        return False
    group.captions = kept
    return True


def _chain(first: list[CaptionGroup], rest: Iterator[CaptionGroup]) -> Iterator[CaptionGroup]:
    yield from first
    yield from rest
