"""Export captioned images as a training dataset: imagefolder, CSV, COCO, sidecar, parquet.

What goes in: every image with a current caption (``only="captioned"``), or only those
whose current caption a person wrote or verified (``only="verified"``), optionally
restricted to one library folder.  Only images that exist and decode are exported;
missing and unreadable ones are counted and listed in the stats' ``problems``.

Layouts written under ``OUT`` (each split folder only when it has images):

``imagefolder``
    ``train/`` and ``validation/`` with the images and a ``metadata.jsonl`` of
    ``{"file_name", "text"}`` lines: ``datasets.load_dataset("imagefolder", data_dir=OUT)``.
``csv``
    ``captions.csv`` (``file_name`` relative to OUT, ``text``, ``split`` and provenance
    columns) beside ``train/`` and ``validation/`` image folders.
``coco``
    ``annotations/captions_train.json`` and ``captions_validation.json`` (COCO
    captions: ``images`` + ``annotations``; ``file_name`` relative to the split folder).
``sidecar``
    the images in ``train/`` / ``validation/``, each with a caption file of the same stem
    (``.txt`` or ``.caption``).  *consumer* (CLI ``--for onetrainer|ai-toolkit|kohya``)
    applies that trainer's discovery rules (:data:`CONSUMERS`): sub-folders flattened as
    ``album__photo.jpg`` where it does not recurse (*flatten*), formats it does not read
    converted (*convert_to*, ``png`` by default, named ``anim.gif.png``), and every image it
    would still skip is one warning.  *variants* writes the caption's variants (kept by
    ``import sidecar --lines-as-variants``) one per line, as OneTrainer reads them.
``kohya``
    the layout kohya sd-scripts discovers: ``train/<repeats>_captions/`` and
    ``validation/1_captions/`` holding every image directly (sub-folders flattened as
    ``album__photo.jpg``; formats sd-scripts does not read, e.g. TIFF and GIF, converted
    to PNG as ``scan.tif.png``) with ``<stem>.txt`` captions, plus ``dataset_train.toml`` in
    sd-scripts' ``--dataset_config`` format (paths relative to OUT: run sd-scripts from OUT).
    The held-out images get no config: sd-scripts trains on every ``--dataset_config``.  The
    plain ``sidecar`` layout keeps sub-folders and formats as they are, which sd-scripts skips.
``parquet``
    ``data/train-00000-of-00001.parquet`` (and validation) with the image bytes embedded
    in the Hugging Face ``Image`` layout, so the dataset loads after the photos move.

The split comes from :func:`core.splits.assign_split`: deterministic, stable as the
library grows, and byte-identical duplicates always on the same side.

HEIC/HEIF/AVIF are converted to JPEG (named ``IMG_1.HEIC.jpg``): imagefolder, PIL
without plugins and the training tools cannot read them.  Other files are copied as
they are, metadata included.

Atomicity: everything is written into a hidden ``.OUT.partial-*`` folder beside OUT and
renamed into place only when complete (after fsync), so a cancelled, failed or killed
export never leaves a half dataset at OUT.  A later export to the same OUT removes the
hidden leftovers of a killed one, and only those: folders carrying CaptionDesk's owner
marker (:mod:`core.ownership`), at once when the marker's process (on this machine) is
gone, else once untouched for an hour, so a running one is safe and a person's own
``.OUT.partial-x`` or ``.OUT.old-x`` folder is never touched.
``--overwrite`` refuses, naming them, when files were added to or changed in the earlier
export after it was made: they are the user's, not CaptionDesk's to delete.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import uuid
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from sqlalchemy import Integer, func, select, type_coerce
from sqlalchemy.orm import aliased
from sqlalchemy.sql import Select

from core import __version__, ownership
from core.db import Database
from core.errors import UserFacingError
from core.filenames import to_os
from core.imaging import IMAGE_EXTENSIONS, ImageDecodeError, load_rgb
from core.jobs import NEVER_CANCELLED, CancelToken, JobRun, JobStats, ProgressCallback, count_phrase, no_progress, not_counted
from core.models import Caption, CaptionSource, Image, ImageState, LibraryRoot
from core.queries import FolderNotInLibraryError, FolderScope, in_folder, outdated_phrase, resolve_folder
from core.splits import DEFAULT_SEED, DEFAULT_VAL_RATIO, SPLITS, assign_split, validate_val_ratio

if TYPE_CHECKING:
    from core.library import Library

EXPORT_FORMATS = ("imagefolder", "csv", "coco", "sidecar", "parquet", "kohya")
#: ``captioned``: any current caption; ``verified``: the current caption is a person's.
ONLY_CHOICES = ("captioned", "verified")
CAPTION_EXTENSIONS = (".txt", ".caption")
#: Formats the dataset consumers cannot read: exported as JPEG.
CONVERT_TO_JPEG = frozenset({".heic", ".heif", ".avif"})
CONVERTED_JPEG_QUALITY = 95
#: Box the readability check decodes into (JPEGs decode at 1/8 scale: cheap).
READABLE_CHECK_SIZE = 64
#: Written into every export: how it was made (and the mark that allows --overwrite).
MANIFEST_NAME = "captiondesk_export.json"
CSV_NAME = "captions.csv"
CSV_COLUMNS = (
    "file_name", "text", "split", "source", "model_name", "adapter", "origin", "score",
    "caption_created_at", "fingerprint", "library_path",
)
#: A marked partial folder untouched for this long belongs to a killed export (when its
#: owner cannot be asked: another machine, or not POSIX).
STALE_PARTIAL_SECONDS = ownership.STALE_SECONDS
#: The owner marker's job name for export staging folders.
EXPORT_JOB = "export"
#: Files in an earlier export that the user added or changed, listed when refusing.
SHOWN_USER_FILES = 5
#: Rows per database read while streaming the selection.
CHUNK_SIZE = 500
#: Parquet row groups: at most this many images or bytes (the Hub viewer likes ~100).
PARQUET_ROWS_PER_GROUP = 100
PARQUET_BYTES_PER_GROUP = 64 * 1024 * 1024


class ExportError(UserFacingError):
    """The export cannot be done as asked (the message says what to change)."""


# -- what to export -------------------------------------------------------------------


def folder_scope(db: Database, folder: Path | str) -> FolderScope:
    """*folder* as a library scope (:func:`core.queries.resolve_folder`); ExportError if outside."""
    with db.read() as session:
        try:
            return resolve_folder(session, folder)
        except FolderNotInLibraryError as exc:
            raise ExportError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class CaptionedImage:
    """One image with its current caption, as streamed from the library."""

    image_id: int
    root_id: int
    root_path: str
    rel_path: str
    fingerprint: str
    state: str
    error: str | None
    width: int | None
    height: int | None
    size: int
    mtime_ns: int
    caption_id: int
    text: str
    source: str
    model_name: str | None
    adapter: str | None
    origin: str | None
    score: float | None
    caption_created_at: datetime
    #: What the train/validation split hashes: the fingerprint before the file's first
    #: change (e.g. metadata written into it), else the fingerprint.
    split_key: str

    @property
    def path(self) -> Path:
        return Path(to_os(self.root_path)) / to_os(self.rel_path)


# "is_current + 0" rather than "is_current = 1": on the bare column SQLite picks the
# (is_current, source) index, reads every current caption and sorts them again for each
# chunk of the keyset pagination below (quadratic in the library's size).  With the
# expression it walks images by id and looks each caption up by image_id (see
# docs/optimization-notes.md, "Streaming an export").
_current_flag = type_coerce(Caption.is_current, Integer) + 0


def _captioned_query(
    only: str, folder: FolderScope | None, image_ids: Collection[int] | None = None
) -> Select[Any]:
    if only not in ONLY_CHOICES:
        raise ExportError(f"--only must be one of {', '.join(ONLY_CHOICES)}, not {only!r}")
    query = (
        select(
            Image.id, Image.root_id, LibraryRoot.path, Image.rel_path, Image.fingerprint,
            Image.state, Image.error, Image.width, Image.height, Image.size, Image.mtime_ns,
            Caption.id, Caption.text, Caption.source, Caption.model_name, Caption.adapter,
            Caption.origin, Caption.score, Caption.created_at,
            func.coalesce(Image.split_key, Image.fingerprint),
        )
        .join(Caption, (Caption.image_id == Image.id) & (_current_flag == 1))
        .join(LibraryRoot, LibraryRoot.id == Image.root_id)
    )
    if only == "verified":
        query = query.where(Caption.source == CaptionSource.HUMAN.value)
    if folder is not None:
        query = query.where(Image.root_id == folder.root_id)
        if folder.prefix:
            query = query.where(in_folder(Image.rel_path, folder.prefix))
    if image_ids is not None:
        # One JSON parameter, not one per id: a 100 000-image selection stays under
        # SQLite's bound-parameter limit.
        ids = func.json_each(json.dumps(sorted({int(i) for i in image_ids}))).table_valued("value")
        query = query.where(Image.id.in_(select(ids.c.value)))
    return query


def iter_captioned_images(
    db: Database, *, only: str = "captioned", folder: FolderScope | None = None,
    image_ids: Collection[int] | None = None, chunk_size: int = CHUNK_SIZE,
) -> Iterator[CaptionedImage]:
    """Every image with a current caption (whatever its state), by id, in short reads.

    Keyset pagination on the image id: each chunk is its own short read transaction, so
    a 100 000-image export holds neither 100 000 objects nor a read lock for its length.
    """
    base = _captioned_query(only, folder, image_ids)
    last_id = 0
    while True:
        query = base.where(Image.id > last_id).order_by(Image.id).limit(chunk_size)
        with db.read() as session:
            rows = session.execute(query).all()
        if not rows:
            return
        for row in rows:
            yield CaptionedImage(*row)
        last_id = rows[-1][0]


def count_captioned_images(
    db: Database, *, only: str = "captioned", folder: FolderScope | None = None,
    image_ids: Collection[int] | None = None,
) -> int:
    """How many images an export (or metadata write) with these choices would take."""
    query = _captioned_query(only, folder, image_ids).with_only_columns(func.count(Image.id))
    with db.read() as session:
        return session.scalar(query) or 0


def count_export_split(
    db: Database, *, only: str = "captioned", folder: FolderScope | None = None,
    image_ids: Collection[int] | None = None, val_ratio: float = DEFAULT_VAL_RATIO, seed: int = DEFAULT_SEED,
) -> dict[str, int]:
    """How many images each split of an export with these choices would get, before it runs.

    The same split keys and :func:`assign_split` as the export itself; images that turn
    out to be missing or unreadable during the export are left out there, so these
    counts are an upper bound.
    """
    val_ratio = validate_val_ratio(val_ratio)
    query = _captioned_query(only, folder, image_ids).with_only_columns(func.coalesce(Image.split_key, Image.fingerprint))
    counts = dict.fromkeys(SPLITS, 0)
    with db.read() as session:
        for (key,) in session.execute(query):
            counts[assign_split(key, val_ratio, seed)] += 1
    return counts


def _root_labels(
    db: Database, only: str, folder: FolderScope | None, image_ids: Collection[int] | None = None
) -> dict[int, str]:
    """Folder names to prefix file names with when the export spans several roots."""
    query = _captioned_query(only, folder, image_ids).with_only_columns(Image.root_id, LibraryRoot.path).distinct()
    with db.read() as session:
        roots = sorted(session.execute(query).all())
    if len(roots) <= 1:
        return {}
    names = [Path(path).name or "root" for _id, path in roots]
    folded = [name.casefold() for name in names]
    labels: dict[int, str] = {}
    taken: set[str] = set()
    for (root_id, _path), name in zip(roots, names, strict=True):
        label = name if folded.count(name.casefold()) == 1 else f"{name}-{root_id}"
        # "photos-2" may also be another root's own name: never share a folder.
        number = 1
        candidate = label
        while candidate.casefold() in taken or (candidate != name and candidate.casefold() in folded):
            number += 1
            candidate = f"{label}~{number}"
        taken.add(candidate.casefold())
        labels[root_id] = candidate
    return labels


# -- stats ----------------------------------------------------------------------------


@dataclass
class ExportStats(JobStats):
    """What an export did; ``problems`` lists each image left out and why."""

    TITLE: ClassVar[str] = "Export"
    LABELS: ClassVar[Mapping[str, tuple[str, str]]] = {"errors": ("unreadable", "unreadable")}

    format: str
    exported: int = 0
    train: int = 0
    validation: int = 0
    converted: int = 0
    skipped: int = 0
    missing: int = 0
    errors: int = 0
    #: Images in scope left out because their picture changed since they were captioned.
    outdated: int = not_counted()
    #: Exported images the trainer named with ``--for`` would not find (each is a warning).
    unread: int = 0
    #: Where the dataset is, once renamed into place; None if nothing was written.
    out: Path | None = None

    def summary(self) -> str:
        outdated = f"; {outdated_phrase(self.outdated)}" if self.outdated else ""
        if self.cancelled or self.out is None:
            return super().summary() + outdated
        converted = f"; {self.converted} converted to JPEG" if self.converted else ""
        unread = f"; {self.unread} the trainer would not find (see the warnings)" if self.unread else ""
        return (
            f"Exported {count_phrase(self.exported, 'image', 'images')} to {self.out} "
            f"(train {self.train}, validation {self.validation}{converted}); "
            f"{self.missing} missing, {self.errors} unreadable, {self.skipped} skipped{outdated}{unread}"
        )


def outdated_images(
    db: Database, *, only: str = "captioned", folder: FolderScope | None = None,
    image_ids: Collection[int] | None = None,
) -> list[Path]:
    """Paths of the images in scope that are *changed since captioned* and whose old
    caption an export with *only* would have taken: what it leaves out for that reason."""
    old = aliased(Caption)
    query = (
        select(LibraryRoot.path, Image.rel_path)
        .join(LibraryRoot, LibraryRoot.id == Image.root_id)
        .join(old, old.id == Image.outdated_caption_id)
        .where(Image.state == ImageState.OK.value)
        .where(~select(Caption.id).where(Caption.image_id == Image.id, _current_flag == 1).exists())
        .order_by(Image.root_id, Image.rel_path)
    )
    if only == "verified":
        query = query.where(old.source == CaptionSource.HUMAN.value)
    if folder is not None:
        query = query.where(Image.root_id == folder.root_id)
        if folder.prefix:
            query = query.where(in_folder(Image.rel_path, folder.prefix))
    if image_ids is not None:
        ids = func.json_each(json.dumps(sorted({int(i) for i in image_ids}))).table_valued("value")
        query = query.where(Image.id.in_(select(ids.c.value)))
    with db.read() as session:
        return [Path(to_os(root)) / to_os(rel) for root, rel in session.execute(query)]


# -- staging folder -------------------------------------------------------------------


def _fsync(path: Path, *, directory: bool = False) -> None:
    if directory:
        try:  # directories cannot be opened for fsync on Windows: best effort there
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            return
    else:
        fd = os.open(path, os.O_RDWR)  # Windows cannot flush a read-only descriptor
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _files_changed_since(out: Path, manifest: Path) -> list[str]:
    """Files under *out* added or changed after its export finished (the manifest is
    written last; ctime cannot be set back by copying tools)."""
    try:
        info = manifest.stat()
    except OSError:
        return []
    finished = max(info.st_ctime_ns, info.st_mtime_ns)
    changed = []
    for folder, _dirs, files in os.walk(out):
        for name in files:
            path = Path(folder) / name
            if path == manifest:
                continue
            try:
                stamp = path.lstat()
            except OSError:
                continue
            if max(stamp.st_ctime_ns, stamp.st_mtime_ns) > finished:
                changed.append(path.relative_to(out).as_posix())
    return sorted(changed)


class _Staging:
    """A hidden folder beside OUT, renamed onto OUT when the dataset is complete."""

    def __init__(self, out: Path, *, overwrite: bool) -> None:
        self.out = out
        self.replaces_existing = False
        if out.exists() or out.is_symlink():
            if not out.is_dir() or out.is_symlink():
                raise ExportError(f"{out} exists and is a file or a link; choose a new folder")
            if any(out.iterdir()):
                if not (out / MANIFEST_NAME).is_file():
                    raise ExportError(
                        f"{out} exists and is not a CaptionDesk export; choose a new folder"
                    )
                if not overwrite:
                    raise ExportError(f"{out} already holds an export; pass --overwrite to replace it")
                user_files = _files_changed_since(out, out / MANIFEST_NAME)
                if user_files:
                    listed = ", ".join(user_files[:SHOWN_USER_FILES])
                    more = f" and {len(user_files) - SHOWN_USER_FILES} more" if len(user_files) > SHOWN_USER_FILES else ""
                    raise ExportError(
                        f"{out} holds {len(user_files)} files added or changed after the export "
                        f"({listed}{more}); --overwrite would delete them. Move them out or choose a new folder"
                    )
                self.replaces_existing = True
        self._remove_stale_leftovers()
        # os.mkdir, not mkdtemp: the dataset keeps the user's umask, not mode 0700.
        # The owner marker lets a later export remove it as soon as this process is gone.
        self.path = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:12]}"
        try:
            ownership.make_owned_dir(self.path, EXPORT_JOB)
        except OSError as exc:
            raise ExportError(f"cannot create {out}: {exc.strerror or exc}") from None

    def _remove_stale_leftovers(self) -> None:
        """Partial folders of a killed export to this OUT (and old data of a killed swap): marked ones only."""
        ownership.remove_abandoned(self.out.parent, (f".{self.out.name}.partial-*", f".{self.out.name}.old-*"),
                                   EXPORT_JOB)

    def commit(self) -> None:
        """fsync everything, then rename into place (replacing an earlier export)."""
        ownership.unmark(self.path)
        for folder, _dirs, files in os.walk(self.path, topdown=False):
            for name in files:
                _fsync(Path(folder) / name)
            _fsync(Path(folder), directory=True)
        old: Path | None = None
        if self.out.exists():
            if self.replaces_existing:
                # Inside a marked folder: a killed swap's old data is recognisably CaptionDesk's.
                old = ownership.make_owned_dir(self.out.parent / f".{self.out.name}.old-{uuid.uuid4().hex[:12]}",
                                               EXPORT_JOB)
                os.replace(self.out, old / self.out.name)
            else:
                self.out.rmdir()  # empty (checked at the start); rename cannot replace it on Windows
        os.replace(self.path, self.out)
        _fsync(self.out.parent, directory=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# -- images ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _PreparedImage:
    """The bytes to put in the dataset: the original file, or its JPEG conversion."""

    data: bytes
    converted: bool
    width: int | None
    height: int | None


def _icc_profile(path: Path) -> bytes | None:
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as im:
            return im.info.get("icc_profile")
    except Exception:  # noqa: BLE001 - colour profile is a nicety; the pixels decoded already
        return None


def _prepare_image(path: Path, width: int | None, height: int | None) -> _PreparedImage:
    """Check that *path* decodes and return what to write.  Raises ImageDecodeError/OSError."""
    if path.suffix.lower() in CONVERT_TO_JPEG:
        rgb = load_rgb(path)  # orientation applied: the JPEG carries no EXIF to rotate it
        buffer = io.BytesIO()
        icc = _icc_profile(path)
        options: dict[str, Any] = {"quality": CONVERTED_JPEG_QUALITY}
        if icc:
            options["icc_profile"] = icc  # e.g. Display P3 from an iPhone: keep colours right
        rgb.save(buffer, "JPEG", **options)
        return _PreparedImage(buffer.getvalue(), True, rgb.width, rgb.height)
    # A cheap decode proves the file is readable (truncated or corrupt files raise).
    load_rgb(path, max_size=READABLE_CHECK_SIZE)
    return _PreparedImage(path.read_bytes(), False, width, height)


def converted_image_name(
    name: str, *, kohya: bool = False, consumers: Collection[Consumer] = (), convert_to: str = "png"
) -> str:
    """*name* with the suffix of the format the export converts it to appended, if any.

    ``IMG_1.HEIC`` becomes ``IMG_1.HEIC.jpg``; a format one of *consumers* (with *kohya*:
    sd-scripts) does not read also becomes *convert_to* (``scan.tif.png``).  Keeping the
    original name inside is what lets :func:`library_name_candidates` lead an import back.
    """
    if PurePosixPath(name).suffix.lower() in CONVERT_TO_JPEG:
        name += ".jpg"
    if kohya:
        consumers = (*consumers, CONSUMERS["kohya"])
    if any(not consumer.reads_suffix(PurePosixPath(name).suffix) for consumer in consumers):
        name += f".{convert_to}"
    return name


def kohya_flat_name(name: str) -> str:
    """*name* without sub-folders (sd-scripts does not recurse): ``album__photo.jpg``."""
    return KOHYA_FOLDER_SEPARATOR.join(PurePosixPath(name).parts)


def library_name_candidates(name: str) -> list[str]:
    """The library paths an exported image path may stand for, *name* itself first.

    The inverse of :func:`converted_image_name` and :func:`kohya_flat_name`: a library
    file may itself be called ``a.tif.png`` or ``a__b.jpg``, so the literal name wins.
    """
    path = PurePosixPath(name)
    inner = PurePosixPath(path.stem).suffix
    candidates = [name]
    # A conversion appends .jpg or .png to a name in another format (never x.png.png).
    if path.suffix in CONVERTED_SUFFIXES and inner.lower() in IMAGE_EXTENSIONS and inner != path.suffix:
        candidates.append(str(path.with_name(path.stem)))
    for candidate in list(candidates):
        folder, _, file_name = candidate.rpartition("/")
        if KOHYA_FOLDER_SEPARATOR in file_name.strip("_"):
            unflattened = file_name.replace(KOHYA_FOLDER_SEPARATOR, "/")
            candidates.append(f"{folder}/{unflattened}" if folder else unflattened)
    return candidates


@dataclass(frozen=True)
class Consumer:
    """Which images a training tool finds in the folder it is given, and their captions.

    Each is its dataset loader's rule, as written in its source (quoted at each entry of
    :data:`CONSUMERS`); tests/test_interchange.py runs the same rules on real exports.
    """

    key: str
    label: str
    #: Image suffixes it reads.
    extensions: frozenset[str]
    #: Whether the suffix must match in one of the spellings listed (sd-scripts' glob).
    case_sensitive: bool
    #: Whether it looks into sub-folders.
    recursive: bool
    #: Caption files it reads (``<stem><extension>`` beside the image).
    caption_extensions: tuple[str, ...]
    #: Sub-folders it leaves out even when it recurses.
    skipped_folders: frozenset[str] = frozenset()

    def reads_suffix(self, suffix: str) -> bool:
        return (suffix if self.case_sensitive else suffix.lower()) in self.extensions

    def skip_reason(self, name: str) -> str | None:
        """Why the tool would not find *name* (relative to its folder), or None."""
        path = PurePosixPath(name)
        if len(path.parts) > 1 and not self.recursive:
            return "it does not look into sub-folders (leave out --no-flatten)"
        if self.skipped_folders.intersection(path.parts[:-1]):
            return f"it leaves out {'/'.join(sorted(self.skipped_folders))} folders (use --flatten)"
        if not self.reads_suffix(path.suffix):
            return f"it does not read {path.suffix or 'extensionless'} files (use --convert-to png)"
        return None


#: What an export converts a format a trainer does not read to (``png`` is lossless).
CONVERT_TO_CHOICES = ("png", "jpg")
CONVERTED_SUFFIXES = tuple(f".{choice}" for choice in CONVERT_TO_CHOICES)
#: What sd-scripts' ``glob_images`` finds (library/train_util.py ``IMAGE_EXTENSIONS``,
#: matched on the exact suffix in those spellings).
KOHYA_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".PNG", ".JPG", ".JPEG", ".WEBP", ".BMP")
CONSUMERS: dict[str, Consumer] = {
    # sd-scripts library/train_util.py: glob_images(dir, "*" + ext) per IMAGE_EXTENSIONS, no
    # recursion in a subset's image_dir, caption <stem><caption_extension>.
    "kohya": Consumer("kohya", "kohya sd-scripts", frozenset(KOHYA_IMAGE_EXTENSIONS), True, False, CAPTION_EXTENSIONS),
    # OneTrainer modules/util/path_util.py SUPPORTED_IMAGE_EXTENSIONS (lower-cased suffix);
    # ConceptConfig defaults include_subdirectories=False, text prompt_source "sample" (<stem>.txt).
    "onetrainer": Consumer(
        "onetrainer", "OneTrainer", frozenset({".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp"}),
        False, False, (".txt",),
    ),
    # ai-toolkit toolkit/data_loader.py: image_extensions, os.walk of folder_path (lower-cased
    # suffix), files in a _controls folder removed; caption_ext "txt" by default.
    "ai-toolkit": Consumer(
        "ai-toolkit", "ai-toolkit", frozenset({".jpg", ".jpeg", ".png", ".webp"}), False, True, (".txt",),
        frozenset({"_controls"}),
    ),
}


def export_caption_line(text: str) -> str:
    """A caption as the sidecar and kohya layouts write it: one line, since sd-scripts
    reads only the first; imports compare captions in this form to see what was edited."""
    return " ".join(text.strip().splitlines())


def _dataset_name(image: CaptionedImage, root_labels: dict[int, str]) -> str:
    """The image's path inside a split folder: root-relative, so imports match it back."""
    name = converted_image_name(image.rel_path)
    label = root_labels.get(image.root_id)
    if label:
        name = f"{label}/{name}"
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or ".." in parts:
        raise ExportError(f"unsafe path in the library: {image.rel_path!r}")
    return name


class _NameAllocator:
    """Unique names within one split folder, case-insensitively (exFAT, NTFS, APFS).

    With *by_stem*, names must also differ without their extension: a sidecar caption
    file is ``stem + .txt``, so ``a.jpg`` and ``a.png`` would share one.

    Files and folders never take each other's path: a library folder named ``x.txt/``
    beside ``x.jpg`` (whose caption file is ``x.txt``), or one named ``metadata.jsonl/``
    (a *reserved* name the writer needs), gets the next free ``~N`` name instead of
    aborting the export.  *companions* are the suffixes of files written beside each
    item (the sidecar caption).
    """

    def __init__(self, *, by_stem: bool, companions: tuple[str, ...] = (), reserved: tuple[str, ...] = ()) -> None:
        self.by_stem = by_stem
        self.companions = companions
        self.used: set[str] = set()
        #: Every file path claimed (items, their companions, reserved names), case-folded.
        self.files: set[str] = {name.casefold() for name in reserved}
        #: Folder path as wanted (under its allocated parent) → folder path allocated.
        self.folders: dict[str, str] = {}
        self.folder_keys: set[str] = set()

    def _key(self, name: str) -> str:
        path = PurePosixPath(name)
        return str(path.with_suffix("") if self.by_stem else path).casefold()

    def _companion_paths(self, name: str) -> list[str]:
        path = PurePosixPath(name)
        return [str(path.with_suffix(suffix)) for suffix in self.companions]

    def _free(self, name: str) -> bool:
        if self._key(name) in self.used:
            return False
        return all(p.casefold() not in self.files and p.casefold() not in self.folder_keys
                   for p in (name, *self._companion_paths(name)))

    def _folder(self, parent: str, part: str) -> str:
        wanted = f"{parent}/{part}" if parent else part
        allocated = self.folders.get(wanted.casefold())
        if allocated is None:
            candidate, number = wanted, 1
            while candidate.casefold() in self.files:  # a file already has this path
                number += 1
                candidate = f"{parent}/{part}~{number}" if parent else f"{part}~{number}"
            allocated = candidate
            self.folders[wanted.casefold()] = allocated
            self.folder_keys.add(allocated.casefold())
        return allocated

    def allocate(self, wanted: str) -> str:
        path = PurePosixPath(wanted)
        parent = ""
        for part in path.parts[:-1]:
            parent = self._folder(parent, part)
        name = path.name
        candidate = f"{parent}/{name}" if parent else name
        number = 1
        while not self._free(candidate):
            number += 1
            renamed = f"{path.stem}~{number}{path.suffix}"
            candidate = f"{parent}/{renamed}" if parent else renamed
        self.used.add(self._key(candidate))
        self.files.update(p.casefold() for p in (candidate, *self._companion_paths(candidate)))
        return candidate


# -- writers --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    image: CaptionedImage
    split: str
    #: Path relative to the split folder.
    name: str
    text: str
    prepared: _PreparedImage
    #: Further caption variants, written one per line after *text* (sidecar ``--variants``).
    variants: tuple[str, ...] = ()


def _image_data(item: _Item) -> bytes:
    """The bytes to write as *item.name*: the prepared ones, or the photo converted to the
    format the export named it in (``scan.tif.png``, ``anim.gif.jpg``)."""
    target = PurePosixPath(item.name).suffix.lower()
    if item.prepared.converted or target == item.image.path.suffix.lower():
        return item.prepared.data
    rgb = load_rgb(item.image.path)  # 16-bit scaled, upright
    buffer = io.BytesIO()
    if target == ".jpg":
        icc = _icc_profile(item.image.path)
        rgb.save(buffer, "JPEG", quality=CONVERTED_JPEG_QUALITY, **({"icc_profile": icc} if icc else {}))
    else:
        rgb.save(buffer, "PNG")  # lossless
    return buffer.getvalue()


def _caption_file_text(item: _Item) -> str:
    """One caption per line: the caption, then its variants (trainers read the first line,
    or one line per step as OneTrainer does)."""
    return "\n".join(export_caption_line(text) for text in (item.text, *item.variants))


class _Writer(Protocol):
    by_stem: bool

    def add(self, item: _Item) -> None: ...

    def close(self) -> None: ...


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as handle:  # x: never silently overwrite another item
        handle.write(data)


def portable_model_ref(value: str | None) -> str | None:
    """A model or adapter reference fit for a dataset: hub ids as they are, local paths by name.

    Captions made with a local model (a trained version, a folder passed to ``--model``)
    record its absolute path; exported, that would reveal this machine's folders (home,
    temporary training folders) and mean nothing elsewhere.  The last path component
    (the version's or folder's name) is kept.
    """
    if not value:
        return value
    if value.startswith(("/", "\\", "~")) or PureWindowsPath(value).drive:
        name = PureWindowsPath(value).name if PureWindowsPath(value).drive or "\\" in value else PurePosixPath(value).name
        return name or None
    return value


def portable_origin(origin: str | None, root_path: str | None = None) -> str | None:
    """A caption's ``origin`` (``"KIND:file it came from"``) without this machine's folders.

    A file under the image's library folder is given relative to it; any other absolute
    path (an import source elsewhere) by its name: ``sidecar:album/x.txt``, ``csv:captions.csv``.
    """
    if not origin:
        return origin
    kind, colon, where = origin.partition(":")
    if not colon or not (where.startswith(("/", "\\", "~")) or PureWindowsPath(where).drive):
        return origin
    if root_path:
        with contextlib.suppress(ValueError):
            return f"{kind}:{PurePosixPath(where).relative_to(PurePosixPath(root_path)).as_posix()}"
        with contextlib.suppress(ValueError):
            return f"{kind}:{PureWindowsPath(where).relative_to(PureWindowsPath(root_path)).as_posix()}"
    return f"{kind}:{portable_model_ref(where)}"


def _export_relative(filename: Any) -> str:
    """A path inside the staging folder as the user will know it: relative to OUT."""
    path = Path(os.fsdecode(filename))
    for parent in path.parents:
        if parent.name.startswith(".") and ".partial-" in parent.name:
            return path.relative_to(parent).as_posix()
    return str(path)


def _provenance(image: CaptionedImage) -> dict[str, Any]:
    return {
        "source": image.source,
        "model_name": portable_model_ref(image.model_name),
        "adapter": portable_model_ref(image.adapter),
        "origin": portable_origin(image.origin, image.root_path),
        "score": image.score,
        "caption_created_at": image.caption_created_at.isoformat(),
        "fingerprint": image.fingerprint,
        # Root-relative, never absolute: an exported dataset does not reveal home folders.
        "library_path": image.rel_path,
    }


class _ImageFolderWriter:
    by_stem = False
    #: Written in each split folder: no image (or folder of images) may take the name.
    reserved_names = ("metadata.jsonl",)

    def __init__(self, root: Path) -> None:
        self.root = root
        self.handles: dict[str, io.TextIOWrapper] = {}

    def add(self, item: _Item) -> None:
        _write_bytes(self.root / item.split / item.name, item.prepared.data)
        handle = self.handles.get(item.split)
        if handle is None:
            # Kept open across add() calls, closed in close() (also on failure).
            handle = open(self.root / item.split / "metadata.jsonl", "w", encoding="utf-8", newline="\n")  # noqa: SIM115
            self.handles[item.split] = handle
        # `source` (human / model / import) lets an import keep who wrote each caption.
        line = {"file_name": item.name, "text": item.text, "source": item.image.source}
        handle.write(json.dumps(line, ensure_ascii=False) + "\n")

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()


class _CsvWriter:
    by_stem = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self.handle = open(root / CSV_NAME, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed in close()
        self.writer = csv.DictWriter(self.handle, fieldnames=CSV_COLUMNS)
        self.writer.writeheader()

    def add(self, item: _Item) -> None:
        _write_bytes(self.root / item.split / item.name, item.prepared.data)
        row = {"file_name": f"{item.split}/{item.name}", "text": item.text, "split": item.split}
        row.update(_provenance(item.image))
        self.writer.writerow({k: "" if v is None else v for k, v in row.items()})

    def close(self) -> None:
        self.handle.close()


class _CocoWriter:
    by_stem = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self.images: dict[str, list[dict[str, Any]]] = {}
        self.annotations: dict[str, list[dict[str, Any]]] = {}
        self.next_annotation_id = 1

    def add(self, item: _Item) -> None:
        _write_bytes(self.root / item.split / item.name, item.prepared.data)
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


class _SidecarWriter:
    by_stem = True

    def __init__(self, root: Path, caption_extension: str) -> None:
        self.root = root
        self.caption_extension = caption_extension
        self.companion_suffixes = (caption_extension,)

    def add(self, item: _Item) -> None:
        image_path = self.root / item.split / item.name
        _write_bytes(image_path, _image_data(item))
        _write_bytes(image_path.with_suffix(self.caption_extension), _caption_file_text(item).encode("utf-8"))

    def close(self) -> None:
        pass


class _ParquetWriter:
    """One parquet file per split, in row groups, with the HF ``Image`` feature layout."""

    by_stem = False

    def __init__(self, root: Path) -> None:
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
        self.writers: dict[str, Any] = {}
        self.buffers: dict[str, list[dict[str, Any]]] = {}
        self.buffered_bytes: dict[str, int] = {}

    def add(self, item: _Item) -> None:
        row = {"image": {"bytes": item.prepared.data, "path": item.name}, "text": item.text, "file_name": item.name}
        row.update(_provenance(item.image))
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


KOHYA_CONCEPT = "captions"
KOHYA_FOLDER_SEPARATOR = "__"
DEFAULT_KOHYA_REPEATS = 1


class _KohyaWriter:
    """sd-scripts' DreamBooth-style folders: ``<split>/<repeats>_<concept>/`` + TOML configs."""

    by_stem = True

    def __init__(self, root: Path, caption_extension: str, repeats: int = DEFAULT_KOHYA_REPEATS) -> None:
        self.root = root
        self.caption_extension = caption_extension
        #: Validation images are looked at once: repeats only weight training.
        self.folders = {"train": f"{repeats}_{KOHYA_CONCEPT}", "validation": f"1_{KOHYA_CONCEPT}"}
        self.repeats = {"train": repeats, "validation": 1}
        self.used: set[str] = set()

    @staticmethod
    def dataset_name(wanted: str) -> str:
        """Flat (sd-scripts does not recurse), with a suffix sd-scripts reads."""
        layout = export_layout("kohya")
        return layout.name(wanted) if layout is not None else wanted

    def add(self, item: _Item) -> None:
        image_path = self.root / item.split / self.folders[item.split] / item.name
        _write_bytes(image_path, _image_data(item))
        _write_bytes(image_path.with_suffix(self.caption_extension), _caption_file_text(item).encode("utf-8"))
        self.used.add(item.split)

    def close(self) -> None:
        # sd-scripts has no option that loads a second config as validation data (a second
        # --dataset_config would train on it), so only the train split gets a config.
        if "train" not in self.used:
            return
        held_out = (
            f"# The held-out images in validation/{self.folders['validation']}/ are in no config, so\n"
            "# sd-scripts never trains on them: judge the trained model on them yourself (e.g.\n"
            "# caption or generate from them and compare with their .txt captions). Do not pass\n"
            "# a config of that folder to sd-scripts: every --dataset_config is training data.\n"
            if "validation" in self.used
            else ""
        )
        config = (
            "# kohya sd-scripts dataset config (--dataset_config) of the train split, written\n"
            "# by CaptionDesk. image_dir is relative: run sd-scripts from this folder.\n"
            f"{held_out}"
            "[general]\n"
            f"caption_extension = {json.dumps(self.caption_extension)}\n"
            "shuffle_caption = false\n\n"
            "[[datasets]]\n\n"
            "  [[datasets.subsets]]\n"
            f"  image_dir = {json.dumps('train/' + self.folders['train'])}\n"
            f"  num_repeats = {self.repeats['train']}\n"
        )
        (self.root / "dataset_train.toml").write_text(config, encoding="utf-8")


@dataclass(frozen=True)
class _Layout:
    """How a sidecar or kohya export names its images, and the trainer that checks them."""

    flatten: bool = False
    #: Formats any of these does not read are converted to *convert_to*.
    consumers: tuple[Consumer, ...] = ()
    convert_to: str = "png"
    #: The trainer named with ``--for``: each image it would still skip is one warning.
    consumer: Consumer | None = None
    variants: bool = False

    def name(self, wanted: str) -> str:
        if self.flatten:
            wanted = kohya_flat_name(wanted)
        return converted_image_name(wanted, consumers=self.consumers, convert_to=self.convert_to)


#: The formats that write images beside caption files: the ones --for and its options shape.
LAYOUT_FORMATS = ("sidecar", "kohya")


def export_layout(
    fmt: str, *, consumer: str | None = None, flatten: bool | None = None, convert_to: str | None = None,
    caption_extension: str = ".txt", variants: bool = False,
) -> _Layout | None:
    """The layout these options give, with the defaults *consumer* sets; ExportError if they
    cannot work together.  None for formats without caption files."""
    if consumer is not None and consumer not in CONSUMERS:
        raise ExportError(f"unknown trainer {consumer!r}; choose one of {', '.join(CONSUMERS)}")
    if convert_to is not None and convert_to not in (*CONVERT_TO_CHOICES, "none"):
        raise ExportError(f"--convert-to must be one of {', '.join(CONVERT_TO_CHOICES)} or none, not {convert_to!r}")
    if fmt not in LAYOUT_FORMATS:
        if consumer is not None or flatten is not None or convert_to is not None or variants:
            raise ExportError(
                "--for, --flatten, --convert-to and --variants are options of the sidecar and kohya formats"
            )
        return None
    if fmt == "kohya" and (flatten is False or convert_to == "none"):
        raise ExportError("the kohya layout is always flat and in formats sd-scripts reads")
    if fmt == "kohya" and variants:
        raise ExportError("sd-scripts reads one caption per file: --variants is for the sidecar format (OneTrainer)")
    named = CONSUMERS.get(consumer) if consumer is not None else None
    if named is not None and caption_extension not in named.caption_extensions:
        raise ExportError(
            f"{named.label} reads captions from {' or '.join(named.caption_extensions)} files only; "
            "leave out --caption-extension"
        )
    consumers = [CONSUMERS["kohya"]] if fmt == "kohya" else []
    if convert_to != "none":
        if named is not None:
            consumers.append(named)
        elif convert_to is not None:
            consumers.extend(CONSUMERS.values())  # no trainer named: what every one of them reads
    if fmt == "kohya":
        flatten = True
    elif flatten is None:
        # Flat for every named trainer: even one that recurses leaves some folders out (ai-toolkit's _controls).
        flatten = named is not None
    return _Layout(
        flatten=flatten, consumers=tuple(dict.fromkeys(consumers)),
        convert_to=convert_to if convert_to in CONVERT_TO_CHOICES else "png", consumer=named, variants=variants,
    )


def _make_writer(fmt: str, root: Path, caption_extension: str) -> _Writer:
    if fmt == "imagefolder":
        return _ImageFolderWriter(root)
    if fmt == "csv":
        return _CsvWriter(root)
    if fmt == "coco":
        return _CocoWriter(root)
    if fmt == "sidecar":
        return _SidecarWriter(root, caption_extension)
    if fmt == "parquet":
        return _ParquetWriter(root)
    if fmt == "kohya":
        return _KohyaWriter(root, caption_extension)
    raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")


# -- the job --------------------------------------------------------------------------


def _check_out_folder(db: Database, out: Path) -> None:
    """OUT inside a library folder would be scanned back in as duplicates of every photo."""
    with db.read() as session:
        roots = list(session.scalars(select(LibraryRoot.path)))
    resolved = out.resolve()
    for root_path in roots:
        root = Path(root_path)
        if resolved == root or resolved.is_relative_to(root):
            raise ExportError(
                f"{out} is inside the library folder {root}; the next scan would add the "
                "exported copies as new photos. Choose a folder outside the library."
            )
        if root.is_relative_to(resolved):
            raise ExportError(f"{out} contains the library folder {root}; choose another folder")


def _write_manifest(folder: Path, stats: ExportStats, params: dict[str, Any]) -> None:
    manifest = {
        "format": params["format"],
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "captiondesk_version": __version__,
        "only": params["only"],
        # The folder's name only: an export carries no absolute path of this machine.
        "folder": Path(params["folder"]).name if params["folder"] else None,
        "split": {
            "function": "core.splits.assign_split",
            "val_ratio": params["val_ratio"],
            "seed": params["seed"],
        },
        "counts": stats.counts(),
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def export_dataset(
    library: Library,
    fmt: str,
    out: Path | str,
    *,
    only: str = "captioned",
    folder: Path | str | None = None,
    image_ids: Collection[int] | None = None,
    val_ratio: float = DEFAULT_VAL_RATIO,
    seed: int = DEFAULT_SEED,
    caption_extension: str = ".txt",
    consumer: str | None = None,
    flatten: bool | None = None,
    convert_to: str | None = None,
    variants: bool = False,
    overwrite: bool = False,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken = NEVER_CANCELLED,
) -> ExportStats:
    """Export the library's captioned images to *out* in format *fmt* (see module doc).

    *library* is a :class:`core.library.Library`.  *image_ids*, when given, narrows the
    export to those images (a selection, or the ids of a filter).  Raises :class:`ExportError` for
    options that cannot work (before anything is written).  Returns stats; ``out`` is
    None when the export was cancelled or nothing qualified, and then nothing exists at
    *out*.  The run is recorded as an ``export`` job.  *consumer*, *flatten*, *convert_to*
    and *variants* shape the sidecar and kohya layouts (see :func:`export_layout`).
    """
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if caption_extension not in CAPTION_EXTENSIONS:
        raise ExportError(f"caption extension must be one of {', '.join(CAPTION_EXTENSIONS)}")
    try:
        val_ratio = validate_val_ratio(val_ratio)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    layout = export_layout(
        fmt, consumer=consumer, flatten=flatten, convert_to=convert_to, caption_extension=caption_extension,
        variants=variants,
    )
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ExportError("parquet export needs pyarrow: pip install pyarrow") from None
    db: Database = library.db
    out_path = Path(out).expanduser().absolute()
    folder_filter = folder_scope(db, folder) if folder is not None else None
    _check_out_folder(db, out_path)
    own = library.own_folder_holding(out_path)
    if own is not None:
        raise ExportError(f"{out_path} is inside the library's own folder {own}, where CaptionDesk deletes "
                          "what it no longer needs; choose a folder outside it")
    params = {
        "format": fmt, "out": str(out_path), "only": only,
        "folder": str(folder) if folder is not None else None,
        "image_ids": len(image_ids) if image_ids is not None else None,
        "val_ratio": val_ratio, "seed": seed, "caption_extension": caption_extension,
        "for": consumer, "flatten": layout.flatten if layout else None,
        "convert_to": convert_to, "variants": variants,
    }
    total = count_captioned_images(db, only=only, folder=folder_filter, image_ids=image_ids)
    root_labels = _root_labels(db, only, folder_filter, image_ids)
    staging = _Staging(out_path, overwrite=overwrite)  # refuses a bad OUT before the job starts
    try:
        with library.job("export", params, ExportStats(format=fmt), progress) as run:
            stats = run.stats
            # The caption described another picture: never pair it with this one.
            for path in outdated_images(db, only=only, folder=folder_filter, image_ids=image_ids):
                stats.outdated += 1
                stats.problems.append(f"{path}: changed since captioned, left out (caption it again)")
            _run_export(
                db, staging.path, fmt, run,
                only=only, folder_filter=folder_filter, image_ids=image_ids, root_labels=root_labels,
                val_ratio=val_ratio, seed=seed, caption_extension=caption_extension,
                total=total, cancel=cancel, layout=layout,
            )
            if stats.cancelled or stats.exported == 0:
                staging.discard()
            else:
                try:
                    _write_manifest(staging.path, stats, params)
                    staging.commit()
                except OSError as exc:
                    raise ExportError(f"cannot finish the export at {out_path}: {exc.strerror or exc}") from exc
                stats.out = out_path
            run.done = stats.exported  # the record counts what was exported
    except BaseException:
        staging.discard()
        raise
    return stats


def _run_export(
    db: Database,
    root: Path,
    fmt: str,
    run: JobRun[ExportStats],
    *,
    only: str,
    folder_filter: FolderScope | None,
    image_ids: Collection[int] | None,
    root_labels: dict[int, str],
    val_ratio: float,
    seed: int,
    caption_extension: str,
    total: int,
    cancel: CancelToken,
    layout: _Layout | None = None,
) -> None:
    stats = run.stats
    writer = _make_writer(fmt, root, caption_extension)
    allocators = {
        split: _NameAllocator(
            by_stem=writer.by_stem,
            companions=getattr(writer, "companion_suffixes", ()),
            reserved=getattr(writer, "reserved_names", ()),
        )
        for split in SPLITS
    }
    done = 0
    try:
        for image in iter_captioned_images(db, only=only, folder=folder_filter, image_ids=image_ids):
            if cancel.is_set():
                stats.cancelled = True
                break
            done += 1
            variants = _variant_texts(db, image) if layout is not None and layout.variants else ()
            _export_one(image, writer, allocators, stats, root_labels, val_ratio, seed, layout, variants)
            run.progress(done, total, f"Exporting {fmt}")
    except BaseException:
        # The export is discarded; closing may fail for the same reason (a full disk)
        # and must not replace the error that says what went wrong.
        with contextlib.suppress(Exception):
            writer.close()
        raise
    try:
        writer.close()
    except OSError as exc:
        raise ExportError(f"cannot write the dataset: {exc.strerror or exc}") from exc
    run.progress(done, total, "Export cancelled" if stats.cancelled else "Export finished", force=True)


def _variant_texts(db: Database, image: CaptionedImage) -> tuple[str, ...]:
    """The other variants imported with *image*'s caption (``import sidecar --lines-as-variants``),
    in their file's order, without the current caption's text."""
    index = func.json_extract(Caption.settings, "$.index")
    query = (
        select(Caption.text)
        .where(Caption.image_id == image.image_id, Caption.id != image.caption_id)
        .where(func.json_extract(Caption.settings, "$.variants") == 1, index > 0)
        .order_by(index, Caption.id)
    )
    with db.read() as session:
        texts = list(session.scalars(query))
    seen = {export_caption_line(image.text)}
    result = []
    for text in texts:
        line = export_caption_line(text)
        if line and line not in seen:
            seen.add(line)
            result.append(text)
    return tuple(result)


def _export_one(
    image: CaptionedImage,
    writer: _Writer,
    allocators: dict[str, _NameAllocator],
    stats: ExportStats,
    root_labels: dict[int, str],
    val_ratio: float,
    seed: int,
    layout: _Layout | None = None,
    variants: tuple[str, ...] = (),
) -> None:
    """Export one image, or count and note why it was left out."""
    text = image.text.strip()
    if not text:
        stats.skipped += 1
        stats.problems.append(f"{image.path}: empty caption, skipped")
        return
    if image.state == ImageState.MISSING:
        stats.missing += 1
        stats.problems.append(f"{image.path}: missing (last scan did not find it)")
        return
    if image.state == ImageState.ERROR:
        stats.errors += 1
        stats.problems.append(f"{image.path}: unreadable ({image.error or 'error at scan'})")
        return
    path = image.path
    if not path.is_file():
        stats.missing += 1
        stats.problems.append(f"{path}: missing (not found now; rescan the library)")
        return
    try:
        prepared = _prepare_image(path, image.width, image.height)
    except ImageDecodeError as exc:
        stats.errors += 1
        stats.problems.append(f"{path}: {exc}")
        return
    except OSError as exc:  # reading the source failed: this image only
        stats.errors += 1
        stats.problems.append(f"{path}: cannot read ({exc.strerror or exc})")
        return
    try:
        wanted_name = _dataset_name(image, root_labels)
    except ExportError as exc:
        stats.errors += 1
        stats.problems.append(f"{path}: {exc}")
        return
    if layout is not None:
        wanted_name = layout.name(wanted_name)
    split = assign_split(image.split_key, val_ratio, seed)
    name = allocators[split].allocate(wanted_name)
    try:
        writer.add(_Item(image, split, name, text, prepared, variants))
    except OSError as exc:
        # The output side failed (disk full, permissions): stop, the dataset would be incomplete.
        where = f" ({_export_relative(exc.filename)})" if getattr(exc, "filename", None) else ""
        raise ExportError(f"cannot write the dataset{where}: {exc.strerror or exc}") from exc
    stats.exported += 1
    stats.converted += prepared.converted
    if layout is not None and layout.consumer is not None and (reason := layout.consumer.skip_reason(name)):
        stats.unread += 1
        stats.problems.append(f"{path}: {layout.consumer.label} would not find it as {split}/{name}: {reason}")
    if split == "train":
        stats.train += 1
    else:
        stats.validation += 1
