"""``captiondesk duplicates [FOLDER] [--json] [--keep-one RULE]``: exact and near-duplicate photos.

Hashes what needs it and regroups the whole library (the groups decide the splits of
training, evaluation and export), then lists the groups with a member under FOLDER.
``--keep-one`` keeps one photo of every undecided group and marks the others excluded
from training and export; no file is ever deleted.  Where the library has picture vectors
(``captiondesk index --by image``), a pair the hashes propose must also look alike to them
(``--min-similarity``); the pairs they rejected are counted.
"""

from __future__ import annotations

import argparse
from typing import Any

from captiondesk.common import UserError, add_json_flag, finish_job, open_library, print_problems, run_with_progress

KEEP_RULES = ("first", "largest", "oldest")  # core.duplicates.KEEP_RULES
MIN_SIMILARITY = 0.9  # core.search.query.MIN_PICTURE_SIMILARITY


def cmd_duplicates(args: argparse.Namespace) -> int:
    from core.duplicates import duplicate_groups, find_duplicates, keep_one_by_rule
    from core.queries import FolderNotInLibraryError, resolve_folder

    with open_library(args) as library:
        folder = None
        if args.folder:
            with library.db.read() as session:
                try:
                    folder = resolve_folder(session, args.folder)
                except FolderNotInLibraryError as exc:
                    raise UserError(str(exc)) from None
        stats, interrupted = run_with_progress(
            "Finding duplicates", lambda progress, cancel: find_duplicates(
                library, progress=progress, cancel=cancel, min_similarity=args.min_similarity))
        decided = None
        if stats is not None and not (stats.cancelled or interrupted) and args.keep_one:
            decided = keep_one_by_rule(library, args.keep_one, folder)
        groups = duplicate_groups(library, folder)
    if stats is not None:
        print_problems(stats.problems)

    def human() -> None:
        for group in groups:
            kind = "exact copies" if group.exact else "near-duplicates"
            print(f"Group {group.group_id}: {len(group.members)} {kind}")
            for member in group.members:
                size = f"  {member.width}x{member.height}" if member.width and member.height else ""
                print(f"  {member.mark or '':9}{member.path}{size}")
        if decided is not None:
            print(f"Kept one photo ({args.keep_one}) in {decided} undecided groups; the others are excluded "
                  "from training and export (no file was deleted)")
        if stats is not None:
            print(stats.summary())

    extra: dict[str, Any] = {"groups": [g.to_dict() for g in groups]}
    if stats is not None:
        extra["image_index"] = {"checked": stats.confirmed, "min_similarity": args.min_similarity}
    if args.keep_one:
        extra["keep_one"] = {"rule": args.keep_one, "groups_decided": decided}
    return finish_job(args, "duplicates", stats, interrupted, human, **extra)


def register(subparsers: Any) -> None:
    """Add ``duplicates`` to the main parser's sub-parsers."""
    parser = subparsers.add_parser(
        "duplicates", help="find exact and near-duplicate photos (resized, re-saved, lightly cropped)",
        description=("Hash the photos (once per picture) and group exact and near-duplicate photos across the "
                     "whole library; every member of a group falls in the same split for training, evaluation "
                     "and export. Lists the groups with a photo under FOLDER (default: all). Nothing is deleted."),
    )
    parser.add_argument("folder", nargs="?", metavar="FOLDER", help="list only groups with a photo in this folder")
    parser.add_argument("--keep-one", choices=KEEP_RULES, metavar="RULE",
                        help="in every undecided group keep one photo - first (by path), largest (most pixels) "
                        "or oldest (file time) - and exclude the others from training and export")
    parser.add_argument("--min-similarity", type=float, default=MIN_SIMILARITY, metavar="COSINE",
                        help="where the library has picture vectors (index --by image), a pair the hashes "
                        f"propose must also have at least this cosine similarity, -1 to 1 (default {MIN_SIMILARITY})")
    add_json_flag(parser)
    parser.set_defaults(handler=cmd_duplicates)
