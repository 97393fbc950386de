"""The write-back job (``write-metadata``): each photo's caption into the file, or into its XMP sidecar.

Safety of a write into a photo:

* the new file is built in memory by exiv2 (through pyexiv2), written to a hidden
  temporary file beside the original, fsynced and renamed over it (``os.replace``): a
  crash leaves either the old or the new file, never half of one;
* before the rename, the image data of the old and new file are compared — for JPEG,
  PNG and WebP the compressed pixel stream byte for byte (cheap, exact), for others the
  decoded pixels — and the write is refused if they differ;
* other metadata is kept (exiv2 edits only the tags it is given); permissions are kept.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import update

from core.filenames import to_os
from core.fingerprint import fingerprint_file
from core.jobs import (
    NEVER_CANCELLED,
    CancelToken,
    JobStats,
    Progress,
    ProgressCallback,
    Throttle,
    count_phrase,
    no_progress,
)
from core.metadata.errors import MetadataError, MetadataUnavailable
from core.metadata.exiv2 import load_pyexiv2
from core.metadata.fields import (
    EMPTY_XMP_PACKET,
    EXIF_DESCRIPTION,
    IN_FILE_SUFFIXES,
    IPTC_CAPTION,
    IPTC_CAPTION_MAX_BYTES,
    IPTC_SUFFIXES,
    exif_changes,
    iptc_caption_text,
    iptc_changes,
    metadata_text,
    xmp_changes,
)
from core.metadata.files import atomic_write, remove_stale_temporaries, same_image_data
from core.metadata.sidecars import DEFAULT_SIDECAR_NAMING, read_sidecar, sidecar_path, validate_sidecar_naming
from core.models import Image, ImageState

if TYPE_CHECKING:
    from core.datasets.selection import CaptionedImage
    from core.library import Library


@dataclass(frozen=True)
class WriteOutcome:
    """Where a caption went and whether anything had to change."""

    target: Path
    changed: bool
    in_file: bool
    fields: tuple[str, ...] = ()
    #: An older EXIF ImageDescription removed because the caption is not ASCII.
    removed_exif_description: str | None = None
    #: The caption was longer than IPTC allows: IPTC holds its beginning, XMP all of it.
    iptc_truncated: bool = False


def _write_in_file(path: Path, text: str, dry_run: bool = False) -> WriteOutcome:
    pyexiv2 = load_pyexiv2()
    before = path.read_bytes()
    mode = os.stat(path).st_mode
    suffix = path.suffix.lower()
    try:
        with pyexiv2.ImageData(before) as image:
            xmp = xmp_changes(image, text)
            iptc = iptc_changes(image, text) if suffix in IPTC_SUFFIXES else {}
            exif = exif_changes(image, text)
            removed = image.read_exif().get(EXIF_DESCRIPTION) if exif.get(EXIF_DESCRIPTION, "") is None else None
            if not (xmp or iptc or exif):
                return WriteOutcome(path, changed=False, in_file=True)
            # A dry run builds the new file in memory too: its count of files that cannot
            # be written must be the real run's.
            if xmp:
                image.modify_xmp(xmp)
            if iptc:
                image.modify_iptc(iptc)
            if exif:
                image.modify_exif(exif)
            after = image.get_bytes()
    except MetadataUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - exiv2 reports unsupported/corrupt files this way
        raise MetadataError(f"cannot write metadata into {path.name}: {exc}") from None
    if not same_image_data(before, after):
        raise MetadataError(f"{path.name}: writing metadata would change the image data; file left as it was")
    fields = tuple(name for name, changes in (("xmp", xmp), ("iptc", iptc), ("exif", exif)) if changes)
    truncated = IPTC_CAPTION in iptc and iptc_caption_text(text) != text
    if dry_run:
        return WriteOutcome(path, changed=True, in_file=True, fields=fields, iptc_truncated=truncated)
    atomic_write(path, after, mode)
    return WriteOutcome(
        path, changed=True, in_file=True, fields=fields, removed_exif_description=removed, iptc_truncated=truncated
    )


def _write_sidecar(
    image_path: Path, text: str, naming: str = DEFAULT_SIDECAR_NAMING, dry_run: bool = False
) -> WriteOutcome:
    pyexiv2 = load_pyexiv2()
    target = sidecar_path(image_path, naming)
    if target.is_symlink():
        # Reading it would copy another file's text into the library's folder.
        raise MetadataError(f"the sidecar {target.name} is a symbolic link; not written")
    existing = read_sidecar(target, None) if os.path.lexists(target) else None
    packet = existing if existing is not None else EMPTY_XMP_PACKET
    try:
        with pyexiv2.ImageData(packet) as sidecar:
            changes = xmp_changes(sidecar, text)
            if not changes:
                return WriteOutcome(target, changed=False, in_file=False)
            if dry_run:
                return WriteOutcome(target, changed=True, in_file=False, fields=("xmp",))
            sidecar.modify_xmp(changes)
            data = sidecar.get_bytes()
    except MetadataUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - an unparsable sidecar is left as it is
        raise MetadataError(f"cannot update the sidecar {target.name}: {exc}") from None
    mode = os.stat(target).st_mode if existing is not None else None
    atomic_write(target, data, mode)
    return WriteOutcome(target, changed=True, in_file=False, fields=("xmp",))


def write_caption(
    path: Path | str, text: str, *, sidecar: bool = False, sidecar_naming: str = DEFAULT_SIDECAR_NAMING,
    dry_run: bool = False,
) -> WriteOutcome:
    """Store *text* as the caption in *path*'s metadata (:mod:`core.metadata.fields` says where).

    Returns what was done; ``changed`` is False when the metadata already said so.
    With *dry_run* nothing is written: the outcome says what a real call would do.
    Raises :class:`MetadataError` (nothing written) or OSError from the file system.
    """
    text = metadata_text(text)
    if not text:
        raise MetadataError("an empty caption is not written")
    real = Path(os.path.realpath(path))  # a symlink keeps pointing at the updated photo
    if not real.is_file():
        raise FileNotFoundError(2, "file not found", str(path))
    if sidecar or real.suffix.lower() not in IN_FILE_SUFFIXES:
        return _write_sidecar(real, text, sidecar_naming, dry_run)
    return _write_in_file(real, text, dry_run)


@dataclass
class MetadataWriteStats(JobStats):
    """What a write-metadata run did; ``problems`` names each file that failed and why."""

    TITLE: ClassVar[str] = "Writing metadata"

    #: Older EXIF ImageDescriptions removed for a non-ASCII caption (each named in problems).
    exif_descriptions_removed: int = 0
    #: Captions over IPTC's length limit, cut there (each named in problems; XMP is whole).
    iptc_truncated: int = 0
    written: int = 0
    sidecars: int = 0
    unchanged: int = 0
    skipped: int = 0
    missing: int = 0
    errors: int = 0

    def summary(self) -> str:
        return (
            f"{self.TITLE} {'cancelled' if self.cancelled else 'finished'}: "
            f"captions written into {count_phrase(self.written, 'file', 'files')} and "
            f"{count_phrase(self.sidecars, '.xmp sidecar', '.xmp sidecars')}; "
            f"{self.unchanged} already up to date, {self.missing} missing, {self.errors} failed"
        )


#: Records updated per transaction after in-file writes.
_DB_BATCH = 200


def write_metadata(
    library: Library,
    *,
    sidecar: bool = False,
    sidecar_naming: str = DEFAULT_SIDECAR_NAMING,
    only: str = "captioned",
    folder: Path | str | None = None,
    image_ids: Collection[int] | None = None,
    dry_run: bool = False,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken = NEVER_CANCELLED,
) -> MetadataWriteStats:
    """Write every selected image's current caption into its metadata (or a sidecar).

    *only*, *folder* and *image_ids* select images as for export.  With *dry_run*
    nothing is written and no job is recorded: every file is read and the stats count
    what a real run would change (what the GUI shows before it changes anything).  A file written in place gets a
    new size, mtime and fingerprint; the image's record is updated to match (only if
    the file was as the last scan saw it) so the next scan does not report it changed.
    Recorded as a ``write-metadata`` job.
    """
    from core.datasets.selection import count_captioned_images, folder_scope, iter_captioned_images

    validate_sidecar_naming(sidecar_naming)
    load_pyexiv2()  # fail before starting when pyexiv2 is missing
    db = library.db
    folder_filter = folder_scope(db, folder) if folder is not None else None
    total = count_captioned_images(db, only=only, folder=folder_filter, image_ids=image_ids)
    pending_updates: list[dict[str, Any]] = []
    done = 0

    def flush_updates() -> None:
        if not pending_updates:
            return
        with db.write() as session:
            for row in pending_updates:
                # Guarded on what we saw: a scan that got there first wins.
                session.execute(
                    update(Image)
                    .where(Image.id == row["id"], Image.size == row["old_size"], Image.mtime_ns == row["old_mtime_ns"])
                    .values(size=row["size"], mtime_ns=row["mtime_ns"], fingerprint=row["fingerprint"])
                )
        pending_updates.clear()

    images = iter_captioned_images(db, only=only, folder=folder_filter, image_ids=image_ids)
    if dry_run:
        # Nothing is written and no job is recorded: count what a real run would change.
        stats = MetadataWriteStats()
        throttle = Throttle(0.1)
        for image in images:
            if cancel.is_set():
                stats.cancelled = True
                break
            done += 1
            _write_one(image, sidecar, stats, sidecar_naming, dry_run=True)
            if throttle.ready():
                progress(Progress(done, total, "Checking what would change", stats.counts()))
        progress(Progress(done, total, "Cancelled" if stats.cancelled else "Checked", stats.counts()))
        return stats
    params = {
        "sidecar": sidecar, "sidecar_naming": sidecar_naming, "only": only,
        "folder": str(folder) if folder is not None else None,
        "image_ids": len(image_ids) if image_ids is not None else None,
    }
    cleaned_folders: set[Path] = set()
    with library.job("write-metadata", params, MetadataWriteStats(), progress) as run:
        stats = run.stats
        for image in images:
            folder_of_image = Path(image.path).parent
            if folder_of_image not in cleaned_folders:  # once per folder: a killed run's leftovers
                cleaned_folders.add(folder_of_image)
                remove_stale_temporaries(folder_of_image)
            if cancel.is_set():
                stats.cancelled = True
                break
            done += 1
            update_row = _write_one(image, sidecar, stats, sidecar_naming)
            if update_row is not None:
                pending_updates.append(update_row)
                if len(pending_updates) >= _DB_BATCH:
                    flush_updates()
            run.progress(done, total, "Writing captions into metadata")
        flush_updates()
        run.progress(done, total, "Cancelled" if stats.cancelled else "Finished", force=True)
    return stats


def _link_refusal(image: CaptionedImage) -> str | None:
    """Why *image*'s file is not written through (a link, or a file outside its library
    folder by way of a linked folder), else None: the import refuses such links too."""
    path = image.path
    try:
        if path.is_symlink():
            return "a symbolic link; metadata is not written through links (write into the file it points to)"
        inside = Path(os.path.realpath(path)).is_relative_to(os.path.realpath(to_os(image.root_path)))
    except (OSError, ValueError):
        return None  # the write itself reports what is wrong with the file
    if not inside:
        return f"its real file is outside the library folder {image.root_path} (a linked folder); not written"
    return None


def _write_one(
    image: CaptionedImage, sidecar: bool, stats: MetadataWriteStats,
    sidecar_naming: str = DEFAULT_SIDECAR_NAMING, *, dry_run: bool = False
) -> dict[str, Any] | None:
    """Write one image's caption; returns the record update due after an in-file write."""
    path = image.path
    if image.state == ImageState.MISSING:
        stats.missing += 1
        stats.problems.append(f"{path}: missing (last scan did not find it)")
        return None
    if not image.text.strip():
        stats.skipped += 1
        return None
    refused = _link_refusal(image)
    if refused is not None:
        stats.errors += 1
        stats.problems.append(f"{path}: {refused}")
        return None
    try:
        before = os.stat(path)
        outcome = write_caption(path, image.text, sidecar=sidecar, sidecar_naming=sidecar_naming, dry_run=dry_run)
    except FileNotFoundError:
        stats.missing += 1
        stats.problems.append(f"{path}: missing (not found now; rescan the library)")
        return None
    except MetadataUnavailable:
        raise
    except MetadataError as exc:
        stats.errors += 1
        stats.problems.append(f"{path}: {exc}")
        return None
    except OSError as exc:
        stats.errors += 1
        stats.problems.append(f"{path}: {exc.strerror or exc}")
        return None
    if not outcome.changed:
        stats.unchanged += 1
        return None
    if not outcome.in_file:
        stats.sidecars += 1
        return None
    stats.written += 1
    if outcome.removed_exif_description is not None:
        stats.exif_descriptions_removed += 1
        stats.problems.append(
            f"{path}: older EXIF ImageDescription {outcome.removed_exif_description!r} removed "
            "(EXIF holds ASCII only; the caption is in XMP and IPTC)"
        )
    if outcome.iptc_truncated:
        stats.iptc_truncated += 1
        stats.problems.append(
            f"{path}: caption of {len(image.text.encode('utf-8'))} bytes cut to IPTC's "
            f"{IPTC_CAPTION_MAX_BYTES} in IPTC Caption-Abstract (XMP holds all of it)"
        )
    if dry_run:
        return None
    if (before.st_size, before.st_mtime_ns) != (image.size, image.mtime_ns):
        return None  # changed since the scan for other reasons: let the scanner look at it
    after = os.stat(outcome.target)
    return {
        "id": image.image_id,
        "old_size": image.size,
        "old_mtime_ns": image.mtime_ns,
        "size": after.st_size,
        "mtime_ns": after.st_mtime_ns,
        "fingerprint": fingerprint_file(outcome.target, after.st_size),
    }
