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
    captions already in the photos under SRC (XMP sidecar, XMP, IPTC, EXIF), each kind
    (alt text, title, keywords...) into that kind (:mod:`core.metadata.kind_fields`).

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
  compared as the sidecar export writes them (:func:`core.datasets.naming.export_caption_line`:
  one line), so a multi-line caption exported and read back unedited adds no row.  A
  verified import of the current text of a caption no person has checked yet adds a
  person's copy of it (the library's own text, line breaks kept), as Accept does — but
  not under *replace*, which takes only edits: an untouched model caption stays the model's.
* csv, parquet and imagefolder rows carry one column per caption kind in CaptionDesk's
  exports (:mod:`core.datasets.kind_values`): each of the library's kinds is read from its
  column as a value of that kind, by the same rules (a person's value is kept), so an
  export → import round-trips every kind.
* With several captions for one image, the first becomes current and the others are
  kept in its history, in order.
* Importing the same source again adds nothing (same text from the same origin is
  skipped).
* With *dry_run* nothing is written and no job is recorded: the stats count what the
  import would do (the GUI shows how many people's captions it would replace).
* Hostile input is reported, never fatal: a row that cannot be used (bad UTF-8, a
  lone surrogate, a caption over :data:`~core.datasets.readers.base.MAX_CAPTION_CHARS`, a bad COCO id) is one
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
  also tried as the library name they came from (:func:`core.datasets.naming.library_name_candidates`).
  Unmatched and ambiguous rows are counted and the first few named.
* Rows naming different paths that reach one photo only by its file name are ambiguous:
  none of them is imported, and each is one problem line naming the other row.  A row
  that reaches by file name a photo another row names by path, location or content is
  not imported either (that other row is).  Name-only matches are therefore written
  once the whole source is read; a cancelled import writes none of them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select

from core import captions as caption_store
from core.datasets.errors import CaptionImportError
from core.datasets.import_stats import ImportStats
from core.datasets.kind_values import imported_kind_groups
from core.datasets.matcher import ImageMatcher
from core.datasets.naming import export_caption_line
from core.datasets.readers import IMPORT_FORMATS, READERS
from core.datasets.readers.base import MAX_CAPTION_CHARS, CaptionGroup, readable_name, valid_text
from core.datasets.readers.sidecar import read_sidecars
from core.db import Database
from core.inputs import regular_file_problem
from core.jobs import NEVER_CANCELLED, CancelToken, Progress, ProgressCallback, Throttle, no_progress
from core.kinds import CAPTION, all_kinds, get_kind, normalize_value
from core.models import Caption, CaptionSource

if TYPE_CHECKING:
    from core.library import Library


#: Matched groups written per transaction.
WRITE_BATCH = 200


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
    kinds = list({group.kind for _id, _how, group in batch})
    import_verified = verified
    with (db.read() if dry_run else db.write()) as session:
        # Keyed by (image, kind): each kind has its own current value and history.
        known: dict[tuple[int, str], set[tuple[str, str | None, str]]] = defaultdict(set)
        current: dict[tuple[int, str], tuple[str, str]] = {}
        for image_id, kind, text, origin, caption_source, is_current in session.execute(
            select(Caption.image_id, Caption.kind, Caption.text, Caption.origin, Caption.source,
                   Caption.is_current).where(Caption.image_id.in_(image_ids), Caption.kind.in_(kinds))
        ):
            known[image_id, kind].add((export_caption_line(text), origin, caption_source))
            if is_current:
                current[image_id, kind] = (text, caption_source)
        # Further captions (Flickr8k and COCO have five per image) only join the history:
        # one bulk insert for the batch instead of an ORM flush per row, which was far slower.
        history_rows: list[dict[str, Any]] = []
        for image_id, how, group in batch:
            slot = (image_id, group.kind)
            verified = _group_verified(group, import_verified, honour_source)
            source = (CaptionSource.HUMAN if verified else CaptionSource.IMPORT).value
            texts = group.captions
            if group.kind != CAPTION:
                # Compared as the kind stores them (keywords: normalized, one a line).
                spec = get_kind(session, group.kind)
                texts = [normalize_value(spec, text) for text in texts]
            for index, text in enumerate(texts):
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
                        current.get(slot), text, key in known[slot], verified, replace
                    )
                    if outcome == UNCHANGED:
                        stats.unchanged += 1
                        continue
                    if not dry_run:
                        caption_store.add_import_caption(
                            session, image_id, text, origin=group.origin, details=details, verified=verified,
                            replace=outcome == REPLACED, kind=group.kind,
                        )
                    if outcome == KEPT_HUMAN:
                        stats.kept_human += 1
                    else:
                        # Two rows for one photo's caption count once; each other kind counts apart.
                        counted = image_id if group.kind == CAPTION else slot
                        if counted not in stats.made_current:
                            stats.replaced += outcome == REPLACED
                            stats.current += outcome == CURRENT
                            stats.made_current.add(counted)
                        current[slot] = (text, source)
                elif key in known[slot] or (
                    # A variant the photo already has (from another export of it) is not added twice.
                    group.details.get("variants") and any(k[0] == key[0] for k in known[slot])
                ):
                    stats.unchanged += 1
                    continue
                else:
                    history_rows.append(
                        {
                            "image_id": image_id, "kind": group.kind, "text": text, "source": source,
                            "is_current": False, "origin": group.origin, "provenance": details,
                        }
                    )
                known[slot].add(key)
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
    reader = READERS.get(fmt)
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
        with db.read() as session:
            kinds = list(all_kinds(session))
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
            else:
                # A table row's kind columns are values of those kinds for the same photo.
                for item in (group, *(g for g in imported_kind_groups(group, kinds) if _usable_group(g, stats))):
                    if claims.add(image_id, how, item):
                        batch.append((image_id, how, item))
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
            labels: dict[tuple[str, str], str] = {}
            for g in groups:  # a path named twice is one row, as are the kinds read from one photo file
                labels.setdefault(_row_key(g), _row_label(g))
            rows = list(labels.values())
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


def _row_key(group: CaptionGroup) -> tuple[str, str]:
    """What makes two groups one row: the photo file they were read from, else their label."""
    if group.image_file is not None:
        return group.name, str(group.image_file)
    return _row_label(group), ""


def _row_label(group: CaptionGroup) -> str:
    """A row as problem lines name it: ``FORMAT:file ('path as the source names it')``."""
    return f"{group.origin} ('{readable_name(group.name)}')"


def _usable_group(group: CaptionGroup, stats: ImportStats) -> bool:
    """Drop the captions no library can hold (one problem line each); False if none is left.

    Shared by every format, so a lone surrogate or a megabyte "caption" is a skipped row
    wherever it comes from, never a failed batch.
    """
    if not valid_text(group.name):
        group.name = readable_name(group.name)
    if not valid_text(group.origin):  # a file name with bytes that are not UTF-8
        group.origin = group.origin.encode("utf-8", "backslashreplace").decode("utf-8")
    kept = []
    for text in group.captions:
        if not valid_text(text):
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
