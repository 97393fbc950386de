"""The write-back job (``write-metadata``): each photo's caption kinds into the file, or into its XMP sidecar.

One photo's write is :func:`core.metadata.write_file.write_kinds` (its safety rules are in
:mod:`core.metadata`); this module selects the photos, reports per file and keeps the
library's records in step with the rewritten files.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, field
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
from core.metadata.fields import IPTC_CAPTION_MAX_BYTES
from core.metadata.files import remove_stale_temporaries
from core.metadata.kind_fields import CAPTION, KEYWORDS, METADATA_KINDS
from core.metadata.selection import count_photos_with_values, iter_photos_with_values
from core.metadata.sidecars import DEFAULT_SIDECAR_NAMING, validate_sidecar_naming
from core.metadata.write_file import KindValue, write_kinds
from core.models import Image, ImageState

if TYPE_CHECKING:
    from core.library import Library
    from core.metadata.selection import PhotoValues


@dataclass
class MetadataWriteStats(JobStats):
    """What a write-metadata run did; ``problems`` names each file that failed and why."""

    TITLE: ClassVar[str] = "Writing metadata"

    #: Older EXIF ImageDescriptions removed for a non-ASCII caption (each named in problems).
    exif_descriptions_removed: int = 0
    #: Captions over IPTC's length limit, cut there (each named in problems; XMP is whole).
    iptc_truncated: int = 0
    #: Photos whose alt text (or extended description) was left as it was while their
    #: description changed (each named in problems, to import or to write).
    left_disagreeing: int = 0
    written: int = 0
    sidecars: int = 0
    unchanged: int = 0
    skipped: int = 0
    missing: int = 0
    errors: int = 0
    #: Kind → how many photos' (or sidecars') fields of that kind were (or would be) changed.
    kinds_written: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"{self.TITLE} {'cancelled' if self.cancelled else 'finished'}: "
            f"captions written into {count_phrase(self.written, 'file', 'files')} and "
            f"{count_phrase(self.sidecars, '.xmp sidecar', '.xmp sidecars')}; "
            f"{self.unchanged} already up to date, {self.missing} missing, {self.errors} failed"
            + (f"; by kind: {self.kinds_phrase()}" if set(self.kinds_written) - {CAPTION} else "")
        )

    def kinds_phrase(self) -> str:
        """``caption 3, keywords 1``: how many photos each kind was written to."""
        return ", ".join(f"{kind.replace('_', ' ')} {n}" for kind, n in self.kinds_written.items())


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
    kinds: Collection[str] | None = None,
    replace_keywords: bool = False,
    dry_run: bool = False,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken = NEVER_CANCELLED,
) -> MetadataWriteStats:
    """Write every selected image's current values of *kinds* into its metadata (or a sidecar).

    *kinds* defaults to every kind with metadata fields (:data:`METADATA_KINDS`); an image
    gets those it has a current value of.  Keywords are merged with the photo's own unless
    *replace_keywords*.  *only*, *folder* and *image_ids* select images as for export.  With *dry_run*
    nothing is written and no job is recorded: every file is read and the stats count
    what a real run would change (what the GUI shows before it changes anything).  A file written in place gets a
    new size, mtime and fingerprint; the image's record is updated to match (only if
    the file was as the last scan saw it) so the next scan does not report it changed.
    Recorded as a ``write-metadata`` job.
    """
    from core.datasets.selection import folder_scope

    validate_sidecar_naming(sidecar_naming)
    kinds = validate_kinds(kinds)
    load_pyexiv2()  # fail before starting when pyexiv2 is missing
    db = library.db
    folder_filter = folder_scope(db, folder) if folder is not None else None
    total = count_photos_with_values(db, kinds, only=only, folder=folder_filter, image_ids=image_ids)
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

    images = iter_photos_with_values(db, kinds, only=only, folder=folder_filter, image_ids=image_ids)
    options = _Options(sidecar, sidecar_naming, replace_keywords)
    if dry_run:
        # Nothing is written and no job is recorded: count what a real run would change.
        stats = MetadataWriteStats()
        throttle = Throttle(0.1)
        for image in images:
            if cancel.is_set():
                stats.cancelled = True
                break
            done += 1
            _write_one(image, _values(image, kinds), options, stats, dry_run=True)
            if throttle.ready():
                progress(Progress(done, total, "Checking what would change", stats.counts()))
        progress(Progress(done, total, "Cancelled" if stats.cancelled else "Checked", stats.counts()))
        return stats
    params = {
        "sidecar": sidecar, "sidecar_naming": sidecar_naming, "only": only,
        "folder": str(folder) if folder is not None else None,
        "image_ids": len(image_ids) if image_ids is not None else None,
        "kinds": list(kinds), "replace_keywords": replace_keywords,
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
            update_row = _write_one(image, _values(image, kinds), options, stats)
            if update_row is not None:
                pending_updates.append(update_row)
                if len(pending_updates) >= _DB_BATCH:
                    flush_updates()
            run.progress(done, total, "Writing captions into metadata")
        flush_updates()
        run.progress(done, total, "Cancelled" if stats.cancelled else "Finished", force=True)
    return stats


def _link_refusal(image: PhotoValues) -> str | None:
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


def validate_kinds(kinds: Collection[str] | None) -> tuple[str, ...]:
    """*kinds* in writing order (all with metadata fields when None); a clear error for others."""
    if kinds is None:
        return METADATA_KINDS
    unknown = [k for k in kinds if k not in METADATA_KINDS]
    if unknown:
        raise MetadataError(
            f"no metadata field for the kind {', '.join(map(repr, unknown))}: write-metadata writes "
            f"{', '.join(METADATA_KINDS)} (other kinds stay in the library)"
        )
    return tuple(k for k in METADATA_KINDS if k in kinds)


@dataclass(frozen=True)
class _Options:
    sidecar: bool
    sidecar_naming: str
    replace_keywords: bool


def _values(image: PhotoValues, kinds: tuple[str, ...]) -> dict[str, KindValue]:
    """The current values of *kinds* the library holds for *image*, as :func:`write_kinds` takes them
    (the library stores keywords one a line)."""
    values: dict[str, KindValue] = {}
    for kind in kinds:
        text = image.values.get(kind, "")
        if text.strip():
            values[kind] = text.splitlines() if kind == KEYWORDS else text
    return values


def _write_one(
    image: PhotoValues, values: dict[str, KindValue], options: _Options, stats: MetadataWriteStats,
    *, dry_run: bool = False,
) -> dict[str, Any] | None:
    """Write one image's kinds; returns the record update due after an in-file write."""
    path = image.path
    if image.state == ImageState.MISSING:
        stats.missing += 1
        stats.problems.append(f"{path}: missing (last scan did not find it)")
        return None
    if not values:
        stats.skipped += 1
        return None
    refused = _link_refusal(image)
    if refused is not None:
        stats.errors += 1
        stats.problems.append(f"{path}: {refused}")
        return None
    try:
        before = os.stat(path)
        outcome = write_kinds(
            path, values, sidecar=options.sidecar, sidecar_naming=options.sidecar_naming,
            replace_keywords=options.replace_keywords, dry_run=dry_run,
        )
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
    for kind, text in outcome.left_disagreeing.items():
        stats.left_disagreeing += 1
        stats.problems.append(
            f"{path}: its {kind.replace('_', ' ')} {text!r} was left as it was while the description changed "
            f"(`import metadata` takes it into the library; write-metadata then keeps both in step)"
        )
    if not outcome.changed:
        stats.unchanged += 1
        return None
    for kind in outcome.kinds:
        stats.kinds_written[kind] = stats.kinds_written.get(kind, 0) + 1
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
            f"{path}: caption of {len(image.values[CAPTION].encode('utf-8'))} bytes cut to IPTC's "
            f"{IPTC_CAPTION_MAX_BYTES} in IPTC Caption-Abstract (XMP holds all of it)"
        )
    for kind in outcome.iptc_truncated_kinds:
        stats.problems.append(f"{path}: {kind.replace('_', ' ')} cut to IPTC's limit there (XMP holds all of it)")
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
