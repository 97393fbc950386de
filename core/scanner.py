"""Recursive, incremental folder scanning.

A scan walks each library root and brings the ``images`` table in line with the disk:

* an unchanged file (same size and mtime) costs one ``stat`` — no read;
* a new or changed file is fingerprinted and its header probed (size, format); a file
  whose header cannot be read is stored with ``state='error'`` and the reason;
* a file in ``error`` is checked again (header, then a small decode) even when its size
  and mtime did not change, so an error whose cause went away does not stick;
* a file that disappeared becomes ``state='missing'``; its captions are kept;
* a file that appears with the fingerprint of a missing one is the same photo moved or
  renamed: the old record (and its captions) moves to the new path;
* captions belong to pictures, not paths: files that traded places (two names swapped,
  a cycle of renames) take their own records along, and a file whose *picture* changed at
  the same path (its content key, :func:`core.fingerprint.image_data_key` or else the
  fingerprint, differs; a metadata rewrite keeps it) has its current value of every kind
  (caption, alt text, keywords, …) moved to history and becomes *changed since captioned*
  (``images.outdated_caption_id``, the caption's) until a caption is current again.

Only a scan that walked a root to the end marks anything missing: a cancelled or
crashed scan keeps every record as it was, and the next scan picks up from the disk.
Results are committed in batches, each its own short write transaction, so a crash loses
at most one batch and readers (the GUI) see progress as it happens.

Hidden files and folders (dot-names, and the Windows hidden attribute) are skipped, and so
are the library's own files when it sits inside one of its folders (its thumbnail cache
would otherwise come back as new photos on every scan);
symlinked folders are followed once (a symlink loop is detected by device/inode);
unreadable folders and broken links are counted and reported, never fatal.
Reading the disk (the walk, one file's fingerprint and probe) is :mod:`core.scan_files`;
this module records what it finds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.orm import Session, aliased

from core.db import Database
from core.filenames import for_display, to_os
from core.jobs import (
    NEVER_CANCELLED,
    CancelToken,
    JobStats,
    Progress,
    ProgressCallback,
    Throttle,
    no_progress,
    not_counted,
)
from core.kinds import CAPTION
from core.models import Caption, Image, ImageState, LibraryRoot, utcnow
from core.scan_files import check_decodes, describe_file, shown_path, walk_images

#: Records written per transaction.
BATCH_SIZE = 1000


@dataclass
class ScanStats(JobStats):
    """What a scan found; ``problems`` holds human-readable notes (unreadable folders...)."""

    TITLE: ClassVar[str] = "Scan"
    LABELS: ClassVar[Mapping[str, tuple[str, str]]] = {
        "files": ("file", "files"),
        "errors": ("unreadable", "unreadable"),
    }

    files_seen: int = not_counted()
    new: int = 0
    changed: int = 0
    unchanged: int = not_counted()
    moved: int = 0
    missing: int = 0
    #: Captioned images whose picture changed at the same path (caption now in history).
    outdated: int = not_counted()
    reappeared: int = not_counted()
    errors: int = 0
    #: The images counted in ``errors``: ``"path: reason"`` each (all of them).
    unreadable: list[str] = field(default_factory=list)

    def summary_counts(self) -> dict[str, int]:
        extra = {"changed since captioned": self.outdated} if self.outdated else {}
        return {"files": self.files_seen, **self.counts(), **extra}



class _RootScan:
    """Scanning state of one root: what the DB knew, and the writes waiting to flush."""

    def __init__(self, db: Database, root_id: int, root_path: Path, stats: ScanStats) -> None:
        self.db = db
        self.root_id = root_id
        self.root_path = root_path
        self.stats = stats
        with db.read() as session:
            rows = session.execute(
                select(Image.id, Image.rel_path, Image.size, Image.mtime_ns, Image.state).where(
                    Image.root_id == root_id
                )
            ).all()
        self.known: dict[str, tuple[int, int, int, str]] = {
            rel: (image_id, size, mtime, state) for image_id, rel, size, mtime, state in rows
        }
        self.seen_ids: set[int] = set()
        self.inserts: list[dict[str, object]] = []
        self.updates: list[dict[str, object]] = []
        self.reappeared: list[int] = []
        #: Records whose file has other bytes this scan: id -> (old fingerprint, new fingerprint).
        self.content_changes: dict[int, tuple[str, str]] = {}
        #: Of those, the ones whose current values went to history: id -> [(caption id, kind)].
        self.outdated: dict[int, list[tuple[int, str]]] = {}

    def visit(self, rel_path: str, st: os.stat_result) -> None:
        stats = self.stats
        stats.files_seen += 1
        known = self.known.get(rel_path)
        if known is not None:
            image_id, size, mtime, state = known
            self.seen_ids.add(image_id)
            if size == st.st_size and mtime == st.st_mtime_ns and state != ImageState.ERROR:
                stats.unchanged += 1
                if state == ImageState.MISSING:
                    self.reappeared.append(image_id)
                    stats.reappeared += 1
                return
            # Changed, or in error: an error is checked again on every scan, since its
            # cause (permissions, a file being copied, a restored backup with the same
            # size and mtime, ...) can go away without the file changing.
            path = os.path.join(self.root_path, to_os(rel_path))
            row = describe_file(path, st)
            if state == ImageState.ERROR and size == st.st_size and mtime == st.st_mtime_ns:
                if row["state"] == ImageState.OK:
                    # The error may come from decoding at caption time (a truncated
                    # file whose header is fine): only a real decode clears it.
                    check_decodes(path, row)
                if row["state"] == ImageState.ERROR:
                    stats.unchanged += 1  # still bad: counted in the final error count
                    return
                stats.reappeared += 1  # readable again
            else:
                stats.changed += 1
            row["b_id"] = image_id
            self.updates.append(row)
        else:
            row = describe_file(os.path.join(self.root_path, to_os(rel_path)), st, new=True)
            row.update(root_id=self.root_id, rel_path=rel_path)
            self.inserts.append(row)
            stats.new += 1
        if row["state"] == ImageState.ERROR:
            stats.errors += 1

    @property
    def pending(self) -> int:
        return len(self.inserts) + len(self.updates) + len(self.reappeared)

    def flush(self) -> None:
        if not self.pending:
            return
        now = utcnow()
        with self.db.write() as session:
            if self.inserts:
                for row in self.inserts:
                    row["first_seen_at"] = now
                    row["last_seen_at"] = now
                session.execute(insert(Image), self.inserts)
            if self.updates:
                for row in self.updates:
                    row["last_seen_at"] = now
                outdate = self._compare_content(session)
                columns = [k for k in self.updates[0] if k != "b_id"]
                stmt = (
                    update(Image)
                    .where(Image.id == bindparam("b_id"))
                    .values({c: bindparam(c) for c in columns})
                )
                session.connection().execute(stmt, self.updates)
                # In the same transaction as the new fingerprint: a crash can never
                # leave a new picture paired with the old picture's current caption.
                for image_id, moved in outdate:
                    session.execute(
                        update(Caption).where(Caption.id.in_([cid for cid, _kind in moved])).values(is_current=False)
                    )
                    caption_id = next((cid for cid, kind in moved if kind == CAPTION), None)
                    if caption_id is not None:
                        session.execute(
                            update(Image).where(Image.id == image_id).values(outdated_caption_id=caption_id)
                        )
            if self.reappeared:
                session.execute(
                    update(Image)
                    .where(Image.id.in_(self.reappeared))
                    .values(state=ImageState.OK.value, error=None, last_seen_at=now)
                )
        self.inserts.clear()
        self.updates.clear()
        self.reappeared.clear()

    def _compare_content(self, session: Session) -> list[tuple[int, list[tuple[int, str]]]]:
        """Compare the pending updates' content keys with the stored ones.

        Fills :attr:`content_changes` (every new fingerprint, for
        :func:`_settle_content_moves`); returns ``(image_id, [(caption id, kind), ...])``
        of the images whose picture changed: their current value of every kind.  A file
        in error keeps its stored key (a half-copied file is not a new picture).  A record
        without a stored key (from before content keys) cannot be compared: its new key is
        stored for next time.
        """
        ids = [int(row["b_id"]) for row in self.updates]  # type: ignore[call-overload]
        old: dict[int, tuple[str, str | None]] = {}
        current: dict[int, list[tuple[int, str]]] = {}
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            for image_id, fingerprint, content_key in session.execute(
                select(Image.id, Image.fingerprint, Image.content_key).where(Image.id.in_(chunk))
            ):
                old[image_id] = (fingerprint, content_key)
            for image_id, caption_id, kind in session.execute(
                select(Caption.image_id, Caption.id, Caption.kind)
                .where(Caption.image_id.in_(chunk), Caption.is_current.is_(True))
                .order_by(Caption.id)
            ):
                current.setdefault(image_id, []).append((caption_id, kind))
        outdate: list[tuple[int, list[tuple[int, str]]]] = []
        for row in self.updates:
            image_id = int(row["b_id"])  # type: ignore[call-overload]
            old_fingerprint, old_key = old[image_id]
            if row["state"] == ImageState.ERROR or row["content_key"] is None:
                row["content_key"] = old_key
                continue
            if row["fingerprint"] != old_fingerprint and not old_fingerprint.startswith("unreadable:"):
                # Other bytes: maybe another record's file (a swap), even without a stored key.
                self.content_changes[image_id] = (old_fingerprint, str(row["fingerprint"]))
            if old_key is None or row["content_key"] == old_key:
                continue
            moved = current.get(image_id)
            if moved:
                outdate.append((image_id, moved))
                self.outdated[image_id] = moved
                self.stats.outdated += 1
        return outdate

    def finish(self) -> list[int]:
        """After a complete walk: the ids of records whose files were not found."""
        return [
            image_id
            for image_id, _size, _mtime, state in self.known.values()
            if image_id not in self.seen_ids and state != ImageState.MISSING
        ]


_FILE_COLUMNS = (
    "root_id", "rel_path", "size", "mtime_ns", "fingerprint", "content_key",
    "width", "height", "format", "state", "error", "last_seen_at",
)


def _settle_content_moves(
    db: Database, changes: Mapping[int, tuple[str, str]], outdated: Mapping[int, list[tuple[int, str]]],
    stats: ScanStats,
) -> None:
    """Give files that traded places (a swap, a cycle of renames) their own records back.

    *changes* maps each record whose file has other bytes this scan to ``(old fingerprint,
    new fingerprint)``.  When the picture now at record X's path is the one record S
    had, and following that chain comes back to X, the records of the cycle exchange
    their paths and file columns: each record, with its captions, history, split key and
    every reference to it, lands where its picture is now, and the caption the scan had
    moved to history is current again.  A fingerprint shared by several records is
    ambiguous and a chain that does not close (a file overwritten by another) is left as
    found: those images stay *changed since captioned*, which loses nothing.
    """
    by_old: dict[str, list[int]] = {}
    for image_id, (old_fp, _new_fp) in changes.items():
        by_old.setdefault(old_fp, []).append(image_id)
    source = {}
    for image_id, (_old_fp, new_fp) in changes.items():
        owners = by_old.get(new_fp, [])
        if len(owners) == 1 and owners[0] != image_id:
            source[image_id] = owners[0]
    cycles: list[list[int]] = []
    placed: set[int] = set()
    for start in sorted(source):
        if start in placed:
            continue
        chain = [start]
        while (nxt := source.get(chain[-1])) is not None and nxt not in chain and nxt not in placed:
            chain.append(nxt)
        if source.get(chain[-1]) == start:
            cycles.append(chain)
            placed.update(chain)
    if not cycles:
        return
    ids = [image_id for cycle in cycles for image_id in cycle]
    with db.write() as session:
        columns = [getattr(Image, name) for name in _FILE_COLUMNS]
        files: dict[int, dict[str, object]] = {}
        for start in range(0, len(ids), 900):
            for row in session.execute(select(Image.id, *columns).where(Image.id.in_(ids[start : start + 900]))):
                files[row[0]] = dict(zip(_FILE_COLUMNS, row[1:], strict=True))
        # Free every path of the cycles first: (root, path) is unique.
        for image_id in ids:
            session.execute(update(Image).where(Image.id == image_id).values(rel_path=f"\x00moving/{image_id}"))
        for cycle in cycles:
            for place, mover in zip(cycle, cycle[1:] + cycle[:1], strict=True):
                # The picture at *place*'s path is *mover*'s: the record follows it.
                session.execute(update(Image).where(Image.id == mover).values(files[place]))
                restored = 0
                for caption_id, kind in outdated.get(mover, ()):
                    other = aliased(Caption)  # not correlated with the row being updated
                    has_current = select(other.id).where(other.image_id == mover, other.kind == kind,
                                                         other.is_current.is_(True))
                    # Unless a value of that kind was written meanwhile (the window stays usable).
                    restored += session.execute(
                        update(Caption).where(Caption.id == caption_id, ~has_current.exists()).values(is_current=True)
                    ).rowcount
                stats.outdated -= 1 if restored else 0
    stats.moved += len(ids)
    stats.changed -= len(ids)


def _settle_vanished(
    db: Database, vanished: Sequence[int], stats: ScanStats, scan_started: datetime
) -> None:
    """Move records whose file vanished onto a matching new file, else mark them missing.

    A vanished (or earlier missing) record absorbs a newer, uncaptioned record with the
    same fingerprint: that is the same photo at a new path, and the old record carries
    the captions.  Newer-and-uncaptioned also covers a move that a crashed scan had
    already inserted as a new file.
    """
    now = utcnow()
    vanished_ids = set(vanished)
    with db.write() as session:
        if vanished:
            for chunk_start in range(0, len(vanished), 900):
                chunk = vanished[chunk_start : chunk_start + 900]
                session.execute(
                    update(Image)
                    .where(Image.id.in_(chunk))
                    .values(state=ImageState.MISSING.value)
                )
            stats.missing += len(vanished)
        missing = session.execute(
            select(Image.id, Image.fingerprint, Image.first_seen_at).where(
                Image.state == ImageState.MISSING
            )
        ).all()
        if not missing:
            return
        fingerprints = {fp for _id, fp, _first in missing}
        has_captions = select(Caption.id).where(Caption.image_id == Image.id).exists()
        candidates: dict[str, list[Image]] = {}
        for fp_chunk_start in range(0, len(fingerprints), 900):
            chunk = list(fingerprints)[fp_chunk_start : fp_chunk_start + 900]
            for image in session.scalars(
                select(Image)
                .where(Image.fingerprint.in_(chunk), Image.state != ImageState.MISSING, ~has_captions)
                .order_by(Image.id)
            ):
                candidates.setdefault(image.fingerprint, []).append(image)
        for old_id, fp, first_seen in missing:
            choices = [c for c in candidates.get(fp, []) if c.first_seen_at >= first_seen]
            if not choices:
                continue
            new = choices[0]
            candidates[fp].remove(new)
            moved_values = {
                "root_id": new.root_id,
                "rel_path": new.rel_path,
                "size": new.size,
                "mtime_ns": new.mtime_ns,
                "width": new.width,
                "height": new.height,
                "format": new.format,
                "state": new.state,
                "error": new.error,
                "last_seen_at": now,
            }
            # Delete first: the new record holds the (root, path) the old one moves to.
            session.execute(delete(Image).where(Image.id == new.id))
            session.execute(update(Image).where(Image.id == old_id).values(moved_values))
            stats.moved += 1
            if old_id in vanished_ids:
                stats.missing -= 1
            if new.first_seen_at >= scan_started:  # inserted by this scan: not really new
                stats.new -= 1


def scan(
    db: Database,
    root_ids: Sequence[int] | None = None,
    *,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken = NEVER_CANCELLED,
    batch_size: int = BATCH_SIZE,
    exclude: Collection[str | Path] = (),
) -> ScanStats:
    """Scan the given roots (all roots when None), never *exclude*'s files and folders (see
    :func:`walk_images`).  See the module docstring."""
    with db.read() as session:
        query = select(LibraryRoot.id, LibraryRoot.path).order_by(LibraryRoot.id)
        if root_ids is not None:
            query = query.where(LibraryRoot.id.in_(list(root_ids)))
        roots = session.execute(query).all()

    stats = ScanStats()
    scan_started = utcnow()
    throttle = Throttle(0.1)
    started = time.monotonic()
    vanished: list[int] = []
    content_changes: dict[int, tuple[str, str]] = {}
    outdated: dict[int, list[tuple[int, str]]] = {}

    def report(message: str) -> None:
        elapsed = time.monotonic() - started
        rate = stats.files_seen / elapsed if elapsed > 0 else None
        progress(Progress(stats.files_seen, None, message, stats.counts(), rate))

    for root_id, root_path_text in roots:
        root_path = Path(to_os(root_path_text))
        problems_before = len(stats.problems)
        state = _RootScan(db, root_id, root_path, stats)
        walk = walk_images(root_path, stats.problems, exclude)
        completed = True
        for count, (rel_path, st) in enumerate(walk):
            if count % 64 == 0 and cancel.is_set():
                completed = False
                break
            state.visit(rel_path, st)
            if state.pending >= batch_size:
                state.flush()
            if throttle.ready():
                report(f"Scanning {root_path}")
        state.flush()
        content_changes.update(state.content_changes)
        outdated.update(state.outdated)
        if not completed:
            stats.cancelled = True
            break
        root_unreadable = any(
            p.startswith(f"cannot read folder {shown_path(str(root_path))}:") for p in stats.problems[problems_before:]
        )
        if root_unreadable:
            # An unplugged drive or unmounted share is not a mass deletion.
            continue
        vanished.extend(state.finish())
        with db.write() as session:
            session.execute(
                update(LibraryRoot).where(LibraryRoot.id == root_id).values(last_scan_at=utcnow())
            )

    # Every record of a cycle was seen (its path holds another's picture): a cancelled
    # scan settles the cycles it flushed too.
    _settle_content_moves(db, content_changes, outdated, stats)
    if not stats.cancelled:
        _settle_vanished(db, vanished, stats, scan_started)
        # "unreadable" is every image of these roots in error now (as ``status`` counts
        # them), not only those found bad by this scan.
        with db.read() as session:
            rows = session.execute(
                select(LibraryRoot.path, Image.rel_path, Image.error)
                .join(LibraryRoot, LibraryRoot.id == Image.root_id)
                .where(Image.state == ImageState.ERROR, Image.root_id.in_([r for r, _p in roots]))
                .order_by(LibraryRoot.id, Image.rel_path)
            ).all()
        stats.errors = len(rows)
        stats.unreadable = [
            f"{for_display(root)}/{for_display(rel)}: {error or 'unreadable'}" for root, rel, error in rows
        ]
    report("Scan cancelled" if stats.cancelled else "Scan finished")
    return stats


def recheck_errors(
    db: Database, *, image_ids: Sequence[int] | None = None, root_ids: Sequence[int] | None = None
) -> int:
    """Check the images in ``error`` (among *image_ids*, else of *root_ids*, else all) again.

    The same check a scan does (stat, header, a small decode); an image that is readable
    now goes back to ``ok`` with its new size, mtime and fingerprint.  Returns how many
    recovered.  Costs nothing when no image is in error.
    """
    query = (
        select(Image.id, LibraryRoot.path, Image.rel_path)
        .join(LibraryRoot, LibraryRoot.id == Image.root_id)
        .where(Image.state == ImageState.ERROR)
    )
    if image_ids is None and root_ids is not None:
        query = query.where(Image.root_id.in_(list(root_ids)))
    with db.read() as session:
        rows = session.execute(query).all()
    if image_ids is not None:
        wanted = set(image_ids)
        rows = [row for row in rows if row[0] in wanted]
    recovered: list[dict[str, object]] = []
    for image_id, root_path, rel_path in rows:
        path = os.path.join(to_os(root_path), to_os(rel_path))
        try:
            st = os.stat(path)
        except OSError:
            continue  # still not there: the next scan marks it missing
        row = describe_file(path, st)
        if row["state"] == ImageState.OK:
            check_decodes(path, row)
        if row["state"] == ImageState.OK:
            row["b_id"] = image_id
            row["last_seen_at"] = utcnow()
            recovered.append(row)
    if recovered:
        columns = [k for k in recovered[0] if k != "b_id"]
        stmt = update(Image).where(Image.id == bindparam("b_id")).values({c: bindparam(c) for c in columns})
        with db.write() as session:
            session.connection().execute(stmt, recovered)
    return len(recovered)
