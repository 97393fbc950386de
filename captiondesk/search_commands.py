"""``index`` and ``search``: search by meaning from the command line (thin over ``core.search``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from captiondesk.common import (
    EXIT_OK,
    UserError,
    add_json_flag,
    emit_json,
    finish_job,
    open_library,
    print_problems,
    run_with_progress,
    say,
    wants_json,
)

SPACES = ("text", "image")


def _update(library: Any, space: str, model: str | None) -> tuple[Any, bool]:
    from core.search.index_job import update_index

    label = "Indexing captions" if space == "text" else "Indexing pictures"
    return run_with_progress(label, lambda progress, cancel: update_index(
        library, space, model, progress=progress, cancel=cancel))  # type: ignore[arg-type]


def cmd_index(args: argparse.Namespace) -> int:
    from core.errors import UserFacingError

    spaces = SPACES if args.by == "all" else (args.by,)
    if args.model and len(spaces) > 1:
        raise UserError("--model names one model: use it with --by text or --by image")
    code = EXIT_OK
    with open_library(args) as library:
        for space in spaces:
            try:
                stats, interrupted = _update(library, space, args.model)
            except UserFacingError as exc:
                raise UserError(str(exc)) from None
            if stats is not None:
                print_problems(stats.problems)
            code = max(code, finish_job(args, f"index --by {space}", stats, interrupted,
                                        lambda stats=stats: stats is not None and print(stats.summary())))
            if interrupted:
                break
    return code


def _image_id(library: Any, photo: str) -> int:
    from sqlalchemy import text

    from core.queries import FolderNotInLibraryError, resolve_folder

    path = Path(photo).expanduser().resolve()
    with library.db.read() as session:
        try:
            scope = resolve_folder(session, path.parent)
        except FolderNotInLibraryError as exc:
            raise UserError(str(exc)) from None
        image_id = session.scalar(text("SELECT id FROM images WHERE root_id = :r AND rel_path = :p"),
                                  {"r": scope.root_id, "p": scope.prefix + path.name})
    if image_id is None:
        raise UserError(f"{path} is not in the library (scan its folder first)")
    return int(image_id)


def _filter(args: argparse.Namespace, library: Any) -> Any:
    from core.queries import FolderNotInLibraryError, ImageFilter, resolve_folder

    flt = ImageFilter(states=frozenset(args.state or ()))
    if args.folder:
        with library.db.read() as session:
            try:
                flt = resolve_folder(session, args.folder).image_filter(flt)
            except FolderNotInLibraryError as exc:
                raise UserError(str(exc)) from None
    return flt


def cmd_search(args: argparse.Namespace) -> int:
    from core.errors import UserFacingError
    from core.search.query import search, similar
    from core.view_rows import fetch_rows

    if bool(args.query) == bool(args.like):
        raise UserError("give a QUERY to search for, or --like PHOTO for the photos that look like it")
    by = "image" if args.like else args.by
    with open_library(args) as library:
        flt = _filter(args, library)
        try:
            if not args.no_update:
                stats, interrupted = _update(library, by, args.model)
                if interrupted:
                    return finish_job(args, "search", stats, interrupted, lambda: None)
            if args.like:
                hits = similar(library, _image_id(library, args.like), flt=flt, limit=args.limit, model=args.model)
            else:
                hits = search(library, args.query, by=by, flt=flt, limit=args.limit, model=args.model)
        except UserFacingError as exc:
            raise UserError(str(exc)) from None
        with library.db.read() as session:
            rows = fetch_rows(session, [h.image_id for h in hits])
    results = [{"rank": n, "image_id": h.image_id, "score": round(h.score, 4), "matched": h.kind,
                "path": rows[h.image_id].path, "caption": rows[h.image_id].caption}
               for n, h in enumerate(hits, 1) if h.image_id in rows]
    if wants_json(args):
        emit_json({"command": "search", "exit_code": EXIT_OK, "query": args.query, "like": args.like,
                   "by": by, "results": results})
        return EXIT_OK
    if not results:
        say(args, "Nothing found (is the index built? 'captiondesk index')")
    for r in results:
        caption = f"  {r['caption']}" if r["caption"] else ""
        print(f"{r['rank']:>3}  {r['score']:.3f}  {r['path']}{caption}", file=sys.stdout)
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add ``index`` and ``search`` to the main parser's sub-parsers."""
    from core.queries import DISPLAY_STATES

    index = subparsers.add_parser(
        "index", help="build or update the search-by-meaning index (only new or changed items are embedded)",
    )
    index.add_argument("--by", choices=(*SPACES, "all"), default="text",
                       help="text: caption texts (default); image: the pictures (CLIP/SigLIP); all: both")
    index.add_argument("--model", metavar="M", help="sentence-transformers model (text) or CLIP/SigLIP model "
                       "(image): hub id or folder (default all-MiniLM-L6-v2 / CLIP ViT-B/32)")
    add_json_flag(index)
    index.set_defaults(handler=cmd_index)

    search = subparsers.add_parser(
        "search", help="find photos by meaning, ranked with scores",
        description="Rank photos by how close their captions (--by text) or pictures (--by image, "
                    "uncaptioned ones too) are in meaning to QUERY, or find the photos that look like "
                    "one (--like PHOTO). The index is brought up to date first.",
    )
    search.add_argument("query", nargs="?", metavar="QUERY")
    search.add_argument("--by", choices=SPACES, default="text", help="text (captions, default) or image (pictures)")
    search.add_argument("--like", metavar="PHOTO", help="photos that look like this one (by image)")
    search.add_argument("--folder", metavar="F", help="only images in this library folder (or a folder inside one)")
    search.add_argument("--state", action="append", choices=DISPLAY_STATES, help="only images in this state (repeatable)")
    search.add_argument("--limit", type=int, default=20, metavar="N", help="how many results (default 20)")
    search.add_argument("--model", metavar="M", help="the embedding model (as for 'index')")
    search.add_argument("--no-update", action="store_true", help="search the index as it is, without updating it")
    add_json_flag(search)
    search.set_defaults(handler=cmd_search)
