"""Duplicate photos: the job that finds them, the groups, and "keep one".

:func:`find_duplicates` (the CLI's ``duplicates`` and the window's Duplicates view) hashes
every readable photo whose picture has no current hash (:mod:`core.perceptual_hash`;
stored in ``image_hashes`` with the content key it was computed for, so a changed picture
is hashed again and a metadata rewrite is not), then regroups the whole library at once:
each group of exact and near-duplicate photos gets ``images.duplicate_group`` (its
smallest image id) and ``images.duplicate_split_key`` (its smallest split key), which
every split reads first (:func:`core.splits.split_key_sql`), so a group never straddles
train, validation and test - in training, evaluation and export alike.

"Keep one" (:func:`keep_one`, :func:`keep_one_by_rule`) only marks: the kept photo
``kept``, the others ``excluded`` (``images.duplicate_mark``), which training and export
leave out.  No file is ever deleted or changed.  A rule never overrides a group someone
already decided.

Where an image-embedding index exists, candidate pairs are confirmed by it before grouping:
by default :func:`find_duplicates` asks the library's stored picture vectors of the default
image model (:func:`core.search.query.picture_confirmer`; a photo without a current vector is
left to the hashes), and counts the pairs they rejected.  A ``confirm`` hook
(:data:`PairConfirmer`, pairs of image ids) replaces it; without vectors the hashes decide alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy import text as sql_text

from core.errors import UserFacingError
from core.filenames import to_os
from core.imaging import ImageDecodeError
from core.jobs import NEVER_CANCELLED, CancelToken, JobStats, ProgressCallback, counted_as, no_progress
from core.models import DuplicateMark, Image, ImageHash, LibraryRoot
from core.perceptual_hash import hashes_of_file, near_duplicate_groups
from core.queries import FolderScope, in_folder

if TYPE_CHECKING:
    from core.library import Library

__all__ = [
    "KEEP_RULES", "DuplicateGroup", "DuplicateMember", "DuplicateStats", "DuplicatesError", "PairConfirmer",
    "clear_marks", "count_leaks", "searched", "duplicate_groups", "find_duplicates", "keep_one", "keep_one_by_rule",
]

#: ``keep_one_by_rule`` rules: first by path, largest picture (then file), oldest file.
KEEP_RULES = ("first", "largest", "oldest")
#: Photos decoded and hashed between two commits.
HASH_CHUNK = 64
#: Confirms candidate pairs of image ids (e.g. by image-embedding similarity): one bool each.
PairConfirmer = Callable[[Sequence[tuple[int, int]]], Sequence[bool]]


class DuplicatesError(UserFacingError, ValueError):
    """A "keep one" request that cannot be done (unknown group, photo not in it, rule)."""


@dataclass(kw_only=True)
class DuplicateStats(JobStats):
    TITLE = "Duplicate search"
    LABELS = {"errors": ("unreadable photo", "unreadable photos"), "groups": ("group", "groups"),
              "rejected pairs": ("pair the image index rejected", "pairs the image index rejected")}

    hashed: int = 0
    errors: int = 0
    groups: int = 0
    #: Photos that belong to some group.
    in_groups: int = counted_as("photos in groups")
    #: Candidate pairs of the hashes that the confirmer (the image index) did not confirm.
    rejected: int = counted_as("rejected pairs")
    #: Whether candidate pairs were put to a confirmer at all (no picture vectors: not).
    confirmed: bool = False

    def summary_counts(self) -> dict[str, int]:
        counts = self.counts()
        if not self.confirmed:
            del counts["rejected pairs"]
        return counts


@dataclass(frozen=True)
class DuplicateMember:
    image_id: int
    path: Path
    rel_path: str
    fingerprint: str
    width: int | None
    height: int | None
    size: int
    mtime_ns: int
    #: ``kept``, ``excluded`` or None (undecided).
    mark: str | None
    #: The picture's content key: equal keys are exact copies of one picture.
    content_key: str


@dataclass(frozen=True)
class DuplicateGroup:
    group_id: int
    members: list[DuplicateMember] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """Whether every member is the same picture (not only a near-duplicate)."""
        return len({m.content_key for m in self.members}) == 1

    @property
    def kept(self) -> DuplicateMember | None:
        return next((m for m in self.members if m.mark == DuplicateMark.KEPT), None)

    @property
    def decided(self) -> bool:
        return any(m.mark is not None for m in self.members)

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group_id, "kind": "exact" if self.exact else "near",
            "members": [{"id": m.image_id, "path": str(m.path), "width": m.width, "height": m.height,
                         "size": m.size, "mark": m.mark} for m in self.members],
        }


def _content_key_sql() -> str:
    return "coalesce(i.content_key, i.fingerprint)"


def find_duplicates(
    library: Library, *, progress: ProgressCallback = no_progress, cancel: CancelToken = NEVER_CANCELLED,
    confirm: PairConfirmer | None = None, min_similarity: float | None = None,
) -> DuplicateStats:
    """Hash the photos that need it, then regroup the library's duplicates (see the module).

    Without *confirm*, pairs are confirmed by the stored picture vectors where there are any,
    at cosine *min_similarity* (default :data:`core.search.query.MIN_PICTURE_SIMILARITY`).
    Cancelled while hashing, the hashes made so far are kept and the groups stay as they were.
    """
    if confirm is None:
        from core.search.query import MIN_PICTURE_SIMILARITY, picture_confirmer

        confirm = picture_confirmer(library, min_similarity=MIN_PICTURE_SIMILARITY if min_similarity is None
                                    else min_similarity)
    with library.job("duplicates", {}, DuplicateStats(), progress) as run:
        stats = run.stats
        todo = _photos_to_hash(library)
        for start in range(0, len(todo), HASH_CHUNK):
            if cancel.is_set():
                stats.cancelled = True
                return stats
            rows = []
            for image_id, path, key in todo[start : start + HASH_CHUNK]:
                try:
                    phash, dhash, colour = hashes_of_file(path)
                except ImageDecodeError as exc:
                    run.problem(f"{path}: {exc}")
                    stats.errors += 1
                    phash = dhash = colour = None  # not tried again until the picture changes
                else:
                    stats.hashed += 1
                rows.append({"image_id": image_id, "content_key": key, "phash": phash, "dhash": dhash,
                             "colour": colour})
            _store_hashes(library, rows)
            run.progress(start + len(rows), len(todo), "Hashing photos", force=True)
        run.progress(len(todo), len(todo), "Grouping duplicates", force=True)
        _regroup(library, stats, confirm)
        return stats


def _photos_to_hash(library: Library) -> list[tuple[int, Path, str]]:
    """``(id, path, content key)`` of readable photos without a hash of their current picture."""
    query = sql_text(
        f"SELECT i.id, r.path, i.rel_path, {_content_key_sql()} FROM images i"
        " JOIN library_roots r ON r.id = i.root_id LEFT JOIN image_hashes h ON h.image_id = i.id"
        f" WHERE i.state = 'ok' AND (h.image_id IS NULL OR h.content_key != {_content_key_sql()}) ORDER BY i.id"
    )
    with library.db.read() as session:
        return [(i, Path(to_os(root)) / to_os(rel), key) for i, root, rel, key in session.execute(query)]


def _store_hashes(library: Library, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with library.db.write() as session:
        session.execute(delete(ImageHash).where(ImageHash.image_id.in_([r["image_id"] for r in rows])))
        session.execute(ImageHash.__table__.insert(), rows)


def _regroup(library: Library, stats: DuplicateStats, confirm: PairConfirmer | None) -> None:
    query = sql_text(
        "SELECT i.id, coalesce(i.split_key, i.fingerprint), h.phash, h.dhash, h.colour FROM images i"
        f" JOIN image_hashes h ON h.image_id = i.id AND h.content_key = {_content_key_sql()}"
        " WHERE i.state = 'ok' AND h.phash IS NOT NULL ORDER BY i.id"
    )
    with library.db.read() as session:
        rows = list(session.execute(query))
    ids = [r[0] for r in rows]
    by_index = None
    if confirm is not None:
        stats.confirmed = True

        def by_index(pairs: Sequence[tuple[int, int]]) -> Sequence[bool]:
            answers = confirm([(ids[a], ids[b]) for a, b in pairs])
            stats.rejected += sum(not ok for ok in answers)
            return answers
    groups = near_duplicate_groups([(r[2], r[3], r[4]) for r in rows], confirm=by_index)
    values = []
    for members in groups:
        values += [{"id": ids[m], "group": ids[members[0]], "key": min(rows[k][1] for k in members)}
                   for m in members]
    stats.groups, stats.in_groups = len(groups), len(values)
    # One transaction: a split never sees half of the old groups and half of the new.
    with library.db.write() as session:
        session.execute(sql_text("CREATE TEMP TABLE IF NOT EXISTS new_groups (id INTEGER PRIMARY KEY, "
                                 "grp INTEGER, key TEXT)"))
        session.execute(sql_text("DELETE FROM new_groups"))
        if values:
            session.execute(sql_text("INSERT INTO new_groups VALUES (:id, :group, :key)"), values)
        # Marks of photos no longer in any group go: an excluded photo must not stay hidden alone.
        session.execute(sql_text(
            "UPDATE images SET duplicate_group = NULL, duplicate_split_key = NULL, duplicate_mark = NULL"
            " WHERE (duplicate_group IS NOT NULL OR duplicate_mark IS NOT NULL)"
            " AND id NOT IN (SELECT id FROM new_groups)"))
        session.execute(sql_text(
            "UPDATE images SET duplicate_group = (SELECT grp FROM new_groups n WHERE n.id = images.id),"
            " duplicate_split_key = (SELECT key FROM new_groups n WHERE n.id = images.id)"
            " WHERE id IN (SELECT id FROM new_groups)"))
        session.execute(sql_text("DROP TABLE new_groups"))


def duplicate_groups(library: Library, folder: FolderScope | None = None) -> list[DuplicateGroup]:
    """The groups the last :func:`find_duplicates` found (with a member under *folder*, when
    given), members in path order, groups by id."""
    query = (
        select(Image.duplicate_group, Image.id, LibraryRoot.path, Image.rel_path, Image.fingerprint, Image.width,
               Image.height, Image.size, Image.mtime_ns, Image.duplicate_mark, Image.content_key)
        .join(LibraryRoot, LibraryRoot.id == Image.root_id)
        .where(Image.duplicate_group.is_not(None))
        .order_by(Image.duplicate_group, LibraryRoot.path, Image.rel_path)
    )
    if folder is not None:
        scoped = select(Image.duplicate_group).where(Image.root_id == folder.root_id)
        if folder.prefix:
            scoped = scoped.where(in_folder(Image.rel_path, folder.prefix))
        query = query.where(Image.duplicate_group.in_(scoped))
    groups: dict[int, DuplicateGroup] = {}
    with library.db.read() as session:
        for group, image_id, root, rel, fingerprint, width, height, size, mtime, mark, key in session.execute(query):
            member = DuplicateMember(image_id, Path(to_os(root)) / to_os(rel), rel, fingerprint, width, height,
                                     size, mtime, mark, key or fingerprint)
            groups.setdefault(group, DuplicateGroup(group)).members.append(member)
    return list(groups.values())


def keep_one(library: Library, group_id: int, image_id: int) -> None:
    """Keep *image_id* of group *group_id*; mark the group's other photos excluded."""
    with library.db.write() as session:
        members = set(session.scalars(select(Image.id).where(Image.duplicate_group == group_id)))
        if image_id not in members:
            raise DuplicatesError(f"photo {image_id} is not in duplicate group {group_id}")
        _mark(session, group_id, image_id)


def _mark(session: Any, group_id: int, image_id: int) -> None:
    session.execute(update(Image).where(Image.duplicate_group == group_id)
                    .values(duplicate_mark=DuplicateMark.EXCLUDED.value))
    session.execute(update(Image).where(Image.id == image_id).values(duplicate_mark=DuplicateMark.KEPT.value))


def clear_marks(library: Library, group_id: int) -> None:
    """Undo "keep one" for group *group_id*: every member counts again."""
    with library.db.write() as session:
        session.execute(update(Image).where(Image.duplicate_group == group_id).values(duplicate_mark=None))


def _choose(group: DuplicateGroup, rule: str) -> DuplicateMember:
    if rule == "first":
        return group.members[0]  # members come in path order
    if rule == "largest":
        return max(group.members, key=lambda m: ((m.width or 0) * (m.height or 0), m.size, -group.members.index(m)))
    return min(group.members, key=lambda m: (m.mtime_ns, group.members.index(m)))


def keep_one_by_rule(library: Library, rule: str, folder: FolderScope | None = None) -> int:
    """Keep one photo of every undecided group by *rule* (:data:`KEEP_RULES`); groups someone
    already decided are left as they are.  Returns how many groups were decided."""
    if rule not in KEEP_RULES:
        raise DuplicatesError(f"keep-one rule must be one of {', '.join(KEEP_RULES)}, not {rule!r}")
    chosen = [(g.group_id, _choose(g, rule).image_id) for g in duplicate_groups(library, folder) if not g.decided]
    if chosen:
        with library.db.write() as session:
            for group_id, image_id in chosen:
                _mark(session, group_id, image_id)
    return len(chosen)


def searched(library: Library) -> bool:
    """Whether :func:`find_duplicates` ever hashed a photo of this library."""
    with library.db.read() as session:
        return session.execute(select(ImageHash.image_id).limit(1)).first() is not None


def count_leaks(library: Library, held_out_ids: Sequence[int], train_ids: Sequence[int]) -> int:
    """How many of *held_out_ids* have a near-duplicate (same duplicate group) among *train_ids*."""
    if not held_out_ids or not train_ids:
        return 0
    with library.db.read() as session:
        group_of = dict(session.execute(
            select(Image.id, Image.duplicate_group).where(Image.duplicate_group.is_not(None))).all())
    trained = {group_of[i] for i in train_ids if i in group_of}
    return sum(1 for i in held_out_ids if group_of.get(i) in trained)

