"""``captiondesk export | import | write-metadata``: datasets in and out, captions into photos.

:func:`register` adds the three sub-commands to the main parser's sub-parsers.  Like the
rest of the CLI, user mistakes print one line and exit 2, failed items make the status 1,
Ctrl-C stops after the current image (exit 130) keeping what is done, a progress bar
shows on a terminal, and ``--json`` prints one JSON object on stdout.

This module stays light to import (it is loaded for every ``captiondesk`` call): the
format lists below are checked against the core modules by the tests.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from captiondesk.common import (
    UserError,
    add_json_flag,
    finish_job,
    open_library,
    print_problems,
    run_with_progress,
)
from core.splits import DEFAULT_SEED, DEFAULT_VAL_RATIO

# Mirrors of core.datasets constants (importing those slows every command's start).
EXPORT_FORMATS = ("imagefolder", "csv", "coco", "sidecar", "parquet", "kohya")
IMPORT_FORMATS = ("sidecar", "flickr8k", "coco", "imagefolder", "csv", "parquet", "metadata")
ONLY_CHOICES = ("captioned", "verified")
SIDECAR_NAMINGS = ("auto", "stem", "full")  # core.metadata.SIDECAR_NAMINGS
DEFAULT_SIDECAR_NAMING = "auto"  # core.metadata.DEFAULT_SIDECAR_NAMING
CAPTION_EXTENSIONS = (".txt", ".caption")
TRAINERS = ("onetrainer", "ai-toolkit", "kohya")  # core.datasets.naming.CONSUMERS
CONVERT_TO_CHOICES = ("png", "jpg", "none")  # core.datasets.naming.CONVERT_TO_CHOICES + none


# -- export ---------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from core.datasets.errors import ExportError
    from core.datasets.export_job import export_dataset

    with open_library(args, reading=True) as library:
        try:
            stats, interrupted = run_with_progress(
                "Exporting",
                lambda progress, cancel: export_dataset(
                    library,
                    args.format,
                    args.out,
                    only=args.only,
                    folder=args.folder,
                    val_ratio=args.val_ratio,
                    seed=args.seed,
                    caption_extension=args.caption_extension,
                    consumer=args.trainer,
                    flatten=args.flatten,
                    convert_to=args.convert_to,
                    variants=args.variants,
                    overwrite=args.overwrite,
                    progress=progress,
                    cancel=cancel,
                    kind=args.kind,
                    template=args.template,
                ),
            )
        except ExportError as exc:
            raise UserError(str(exc)) from None
    if stats is not None:
        print_problems(stats.problems)
    if stats is None or stats.cancelled or interrupted:
        return finish_job(args, "export", stats, True,
                          lambda: print(f"Export cancelled: nothing was written to {args.out}"), out=None)
    if stats.exported == 0:
        raise _nothing_selected(args, "export", stats.missing + stats.errors + stats.skipped)
    return finish_job(args, "export", stats, interrupted, lambda: print(stats.summary()),
                      out=str(stats.out) if stats.out else None)


def _nothing_selected(args: argparse.Namespace, verb: str, left_out: int) -> UserError:
    """The one error of ``export`` and ``write-metadata`` when ``--only``/``--folder``
    selected no image they could use (exit 2, as for any user error): the same words
    for both commands."""
    which = "verified (human) captions" if args.only == "verified" else "captions"
    where = f" in {args.folder}" if args.folder else ""
    detail = f" ({left_out} left out, see the warnings above)" if left_out else ""
    hint = "; verify captions first (accept or edit them in the window, or import with --verified)" \
        if args.only == "verified" and not left_out else ""
    return UserError(f"nothing to {verb}: no readable images with {which}{where}{detail}{hint}")


# -- import ---------------------------------------------------------------------------


def cmd_import(args: argparse.Namespace) -> int:
    from core.datasets.errors import CaptionImportError
    from core.datasets.import_job import import_captions

    with open_library(args) as library:
        try:
            stats, interrupted = run_with_progress(
                "Importing",
                lambda progress, cancel: import_captions(
                    library, args.format, args.src, verified=args.verified, honour_source=args.keep_source,
                    replace=args.replace, lines_as_variants=args.lines_as_variants, progress=progress, cancel=cancel,
                ),
            )
        except CaptionImportError as exc:
            raise UserError(str(exc)) from None
    if stats is not None and not (interrupted or stats.cancelled) and stats.rows == 0:
        # Not one caption read from SRC (a file that is no such table, a folder without
        # sidecars): the user's mistake, one line and exit 2, as "nothing to export" is.
        reason = stats.problems[0] if len(stats.problems) == 1 else f"no {args.format} captions found in {args.src}"
        raise UserError(f"nothing to import: {reason}")
    if stats is not None:
        print_problems(stats.problems)
        if stats.unmatched_names:
            more = stats.unmatched + stats.ambiguous - len(stats.unmatched_names)
            listed = ", ".join(stats.unmatched_names) + (f" and {more} more" if more > 0 else "")
            print(f"  not in the library: {listed}", file=sys.stderr)
        if stats.kept_human and not stats.replace:
            print(f"  {stats.kept_human} kept beside a person's caption, which stays current; if they are your "
                  "own later edits (e.g. of an export), import again with --replace", file=sys.stderr)
    return finish_job(args, "import", stats, interrupted, lambda: stats is not None and print(stats.summary()),
                      unmatched_names=list(stats.unmatched_names) if stats is not None else [])


# -- write-metadata -------------------------------------------------------------------


def cmd_write_metadata(args: argparse.Namespace) -> int:
    from core.metadata import write_metadata

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()] if args.kinds else None
    # A bad --folder or no metadata library: user-facing errors, exit 2 in main.
    with open_library(args) as library:
        stats, interrupted = run_with_progress(
            "Writing metadata",
            lambda progress, cancel: write_metadata(
                library, sidecar=args.sidecar, sidecar_naming=args.sidecar_naming, only=args.only, folder=args.folder,
                kinds=kinds, replace_keywords=args.replace_keywords, progress=progress, cancel=cancel,
            ),
        )
    if stats is not None:
        print_problems(stats.problems)
        # Nothing selected (or only missing/empty ones): a user error, as for export.
        # A file that could not be written is not: it makes the status 1 below.
        if not (interrupted or stats.cancelled or stats.written or stats.sidecars or stats.unchanged
                or stats.errors):
            raise _nothing_selected(args, "write", stats.missing + stats.skipped)
    # A photo that could not be written makes the status 1 (its errors count).
    return finish_job(args, "write-metadata", stats, interrupted,
                      lambda: stats is not None and print(stats.summary()),
                      kinds=dict(stats.kinds_written) if stats is not None else {})


# -- parser ---------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add ``export``, ``import`` and ``write-metadata`` to the main parser's sub-parsers."""
    export = subparsers.add_parser(
        "export",
        help="export captioned images as a training dataset",
        description=(
            "Write a dataset of the captioned images to OUT: imagefolder (Hugging Face), csv, "
            "coco (COCO captions JSON), sidecar (image + .txt per image; see --for), kohya (sd-scripts "
            "<repeats>_<name> folders + dataset TOML per split), "
            "parquet (images embedded). Images are split into train/validation by content, "
            "the same way every time. OUT appears only once the export is complete."
        ),
    )
    export.add_argument("format", choices=EXPORT_FORMATS, metavar="FORMAT", help=", ".join(EXPORT_FORMATS))
    export.add_argument("out", metavar="OUT", help="folder to create (outside the library)")
    export.add_argument(
        "--only", choices=ONLY_CHOICES, default="captioned",
        help="captioned: any current caption (default); verified: only captions a person wrote or accepted",
    )
    export.add_argument("--folder", metavar="F", help="only images in this library folder (or a folder inside one)")
    export.add_argument(
        "--val-ratio", type=float, default=DEFAULT_VAL_RATIO, metavar="R",
        help=f"share of images held out for validation, 0 to <1 (default {DEFAULT_VAL_RATIO})",
    )
    export.add_argument("--seed", type=int, default=DEFAULT_SEED, metavar="S", help="split seed (default 0)")
    export.add_argument(
        "--caption-extension", choices=CAPTION_EXTENSIONS, default=".txt",
        help="caption file extension for the sidecar format (default .txt; OneTrainer and ai-toolkit read .txt only)",
    )
    export.add_argument(
        "--for", dest="trainer", choices=TRAINERS, default=None,
        help="sidecar/kohya: lay the images out so this trainer finds every one (flat, formats it does not "
             "read converted) and warn about any it would still skip",
    )
    export.add_argument(
        "--flatten", action=argparse.BooleanOptionalAction, default=None,
        help="sidecar: put every image directly in train/ and validation/ (album__photo.jpg); "
             "the default with --for",
    )
    export.add_argument(
        "--convert-to", choices=CONVERT_TO_CHOICES, default=None,
        help="sidecar/kohya: convert formats the trainer (with --for; else any of them) does not read, "
             "e.g. GIF or TIFF, to png (lossless; the default with --for) or jpg; none keeps them",
    )
    export.add_argument(
        "--variants", action="store_true",
        help="sidecar: write a caption's variants (import sidecar --lines-as-variants) one per line, "
             "as OneTrainer reads them",
    )
    export.add_argument(
        "--kind", default="caption", metavar="KIND",
        help="sidecar/kohya: write this caption kind's values (keywords, alt_text, title, ... ; the photos with "
             "one); csv, parquet and imagefolder carry a column per kind, coco captions only",
    )
    export.add_argument(
        "--template", metavar="TEMPLATE", default=None,
        help='sidecar/kohya: each caption file made of several kinds, e.g. "{keywords}, {caption}" (a kind a photo '
             "has no value of is left out with its separator); recorded in the manifest and kohya's TOML",
    )
    export.add_argument("--overwrite", action="store_true", help="replace an earlier CaptionDesk export at OUT")
    add_json_flag(export)
    export.set_defaults(handler=cmd_export)

    importer = subparsers.add_parser(
        "import",
        help="import captions from a dataset or from photo metadata",
        description=(
            "Import captions from SRC: sidecar (.txt/.caption beside images), flickr8k "
            "(captions.txt), coco (captions JSON), imagefolder (metadata.jsonl/.csv), csv, "
            "parquet, or metadata (XMP/IPTC/EXIF already in the photos). Captions are matched "
            "to library images by path, file name, then content. A person's caption is never replaced, "
            "unless --replace says the imported captions are the person's own later edits."
        ),
    )
    importer.add_argument("format", choices=IMPORT_FORMATS, metavar="FORMAT", help=", ".join(IMPORT_FORMATS))
    importer.add_argument("src", metavar="SRC", help="file or folder to import from")
    importer.add_argument(
        "--verified", action="store_true",
        help="the captions were written by people (e.g. Flickr8k): store them as verified training data",
    )
    importer.add_argument(
        "--keep-source", action="store_true",
        help="honour the source column of CaptionDesk exports (csv, parquet, imagefolder): rows a person "
             "wrote are stored verified, model rows stay unverified (rows without it follow --verified)",
    )
    importer.add_argument(
        "--replace", action="store_true",
        help="the captions are your own edits made in another tool (e.g. of an export): they become current "
             "and verified, also over a person's caption, which is kept in the history (implies --verified)",
    )
    importer.add_argument(
        "--lines-as-variants", action="store_true",
        help="sidecar: each line of a caption file is one variant of the caption (OneTrainer): the first "
             "becomes the caption, the others are kept as alternatives in its history",
    )
    add_json_flag(importer)
    importer.set_defaults(handler=cmd_import)

    write = subparsers.add_parser(
        "write-metadata",
        help="write current captions (and alt text, title, keywords...) into the photos' metadata",
        description=(
            "Write each image's current caption as XMP dc:description, IPTC Caption-Abstract (UTF-8) "
            "and, when ASCII, EXIF ImageDescription; its alt text, extended description, title and keywords "
            "to their XMP/IPTC fields (README, Kinds). JPEG/PNG/TIFF/WebP are updated in place "
            "(atomically, pixels untouched); HEIC/AVIF and others get an .xmp sidecar. "
            "Exit status 1 if any file could not be written."
        ),
    )
    write.add_argument("--sidecar", action="store_true", help="write .xmp sidecars only; leave every photo untouched")
    write.add_argument(
        "--sidecar-naming", choices=SIDECAR_NAMINGS, default=DEFAULT_SIDECAR_NAMING,
        help=f"auto: photo.xmp for RAW files, photo.heic.xmp for the rest; stem: photo.xmp (Lightroom and "
             f"Capture One, which read sidecars of RAW files only); full: photo.jpg.xmp (digiKam, darktable); "
             f"default {DEFAULT_SIDECAR_NAMING}. A RAW+JPEG pair never shares one: the JPEG then gets photo.jpg.xmp",
    )
    write.add_argument(
        "--only", choices=ONLY_CHOICES, default="captioned",
        help="captioned: any current caption (default); verified: only captions a person wrote or accepted",
    )
    write.add_argument("--folder", metavar="F", help="only images in this library folder (or a folder inside one)")
    write.add_argument(
        "--kinds", metavar="K,K",
        help="which kinds to write (caption, alt_text, extended_description, title, keywords); "
             "default: every one an image has a current value of",
    )
    write.add_argument(
        "--replace-keywords", action="store_true",
        help="make the photos' keywords exactly the library's (default: merged with the keywords already in the photo)",
    )
    add_json_flag(write)
    write.set_defaults(handler=cmd_write_metadata)
