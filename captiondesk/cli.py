"""``captiondesk`` command line: a thin layer over :mod:`core`.

User errors (a bad path, a library from a newer version, ...) print one clear line and
exit with status 2; tracebacks are reserved for bugs.  Long jobs run on a worker thread
so Ctrl-C cancels them cleanly (everything committed so far is kept), and show a
progress bar when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from core import __version__
from core.captioning import DEFAULT_MODEL  # torch-free: core.captioning imports torch lazily

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

T = TypeVar("T")


class UserError(Exception):
    """An error caused by the user's input: shown as one line, exit status 2."""


# -- progress and cancellation --------------------------------------------------------


class ProgressBar:
    """A tqdm bar on a terminal; silent (summary only) when output is redirected."""

    def __init__(self, description: str, unit: str = "img") -> None:
        self._bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(desc=description, unit=unit, dynamic_ncols=True, leave=True)

    def __call__(self, progress: Any) -> None:
        bar = self._bar
        if bar is None:
            return
        if progress.total is not None and bar.total != progress.total:
            bar.total = progress.total
        bar.n = progress.done
        postfix = {k: v for k, v in progress.counts.items() if v}
        if postfix:
            bar.set_postfix(postfix, refresh=False)
        bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def run_cancellable(job: Callable[[threading.Event], T]) -> tuple[T | None, bool]:
    """Run ``job(cancel)`` on a worker thread; Ctrl-C sets *cancel* and waits for it.

    Returns ``(result, interrupted)``.  The job decides how fast it stops (between
    batches); what it committed stays committed.
    """
    cancel = threading.Event()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = job(cancel)
        except BaseException as exc:  # re-raised on the main thread
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="captiondesk-job", daemon=True)
    worker.start()
    interrupted = False
    while worker.is_alive():
        try:
            worker.join(0.2)
        except KeyboardInterrupt:
            if interrupted:  # a second Ctrl-C: stop waiting
                raise
            interrupted = True
            cancel.set()
            print("\nStopping after the current batch (Ctrl-C again to quit now)...", file=sys.stderr)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result"), interrupted


# -- commands -------------------------------------------------------------------------


def _open_library(args: argparse.Namespace):
    from core.library import Library, default_library_path

    path = Path(args.library) if args.library else default_library_path()
    return Library(path)


def _print_scan_summary(stats: Any) -> None:
    parts = [
        f"{stats.files_seen} files",
        f"{stats.new} new",
        f"{stats.changed} changed",
        f"{stats.moved} moved",
        f"{stats.missing} missing",
        f"{stats.errors} unreadable",
    ]
    print("Scan " + ("cancelled" if stats.cancelled else "finished") + ": " + ", ".join(parts))
    for problem in stats.problems[:10]:
        print(f"  warning: {problem}", file=sys.stderr)
    if len(stats.problems) > 10:
        print(f"  ... and {len(stats.problems) - 10} more warnings", file=sys.stderr)


def _scan_with_progress(library: Any, root_ids: list[int] | None) -> int:
    bar = ProgressBar("Scanning", unit="file")
    try:
        stats, interrupted = run_cancellable(
            lambda cancel: library.scan(root_ids, progress=bar, cancel=cancel)
        )
    finally:
        bar.close()
    if stats is not None:
        _print_scan_summary(stats)
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


def cmd_add(args: argparse.Namespace) -> int:
    from core.library import LibraryError

    with _open_library(args) as library:
        root_ids = []
        for folder in args.folders:
            try:
                root = library.add_root(folder)
            except LibraryError as exc:
                raise UserError(str(exc)) from None
            print(f"Added {root.path}")
            root_ids.append(root.id)
        if args.no_scan:
            return EXIT_OK
        return _scan_with_progress(library, root_ids)


def cmd_scan(args: argparse.Namespace) -> int:
    from core.library import LibraryError

    with _open_library(args) as library:
        if args.folders:
            try:
                root_ids = [library.find_root(folder).id for folder in args.folders]
            except LibraryError as exc:
                raise UserError(str(exc)) from None
        else:
            if not library.roots():
                raise UserError("the library has no folders yet; add one with 'captiondesk add FOLDER'")
            root_ids = None
        return _scan_with_progress(library, root_ids)


def cmd_status(args: argparse.Namespace) -> int:
    with _open_library(args) as library:
        rows = library.status()
        print(f"Library: {library.path}")
        if not rows:
            print("No folders yet. Add one with: captiondesk add FOLDER")
            return EXIT_OK
        headers = ("images", "uncaptioned", "model", "human", "imported", "missing", "errors")
        print(f"{'folder':<40} " + " ".join(f"{h:>11}" for h in headers))
        totals = [0] * len(headers)
        for row in rows:
            values = (row.images, row.uncaptioned, row.model, row.human, row.imported, row.missing, row.errors)
            totals = [t + v for t, v in zip(totals, values, strict=True)]
            print(f"{_shorten(row.path, 40):<40} " + " ".join(f"{v:>11}" for v in values))
        if len(rows) > 1:
            print(f"{'total':<40} " + " ".join(f"{v:>11}" for v in totals))
    return EXIT_OK


def cmd_caption(args: argparse.Namespace) -> int:
    from core.captioning.engine import run_caption_job
    from core.captioning.errors import ModelLoadError
    from core.captioning.settings import CaptionJobSpec, GenerationSettings
    from core.library import LibraryError
    from core.queries import FolderNotInLibraryError, filtered_ids, resolve_folder

    if bool(args.folders) == bool(args.all):
        raise UserError("name the folders to caption, or --all for the whole library")
    try:
        # The same spec the GUI builds; validated before the library is touched.
        spec = CaptionJobSpec(
            model=args.model,
            adapter=args.adapter,
            settings=GenerationSettings(
                num_beams=args.beams,
                min_new_tokens=args.min_new_tokens,
                max_new_tokens=args.max_new_tokens,
                prompt=args.prompt,
                repetition_penalty=args.repetition_penalty,
            ),
            batch_size=args.batch_size,
            device=args.device,
            overwrite_model_captions=args.overwrite_model_captions,
            optimize=args.optimize,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None

    with _open_library(args) as library:
        folders = []
        for folder in args.folders or []:
            try:
                with library.db.read() as session:
                    folders.append(resolve_folder(session, folder).image_filter())
            except FolderNotInLibraryError:
                # Not in the library yet: add it and scan it first, as a user expects.
                try:
                    root = library.add_root(folder)
                except LibraryError as exc:
                    raise UserError(str(exc)) from None
                print(f"Added {root.path}")
                if _scan_with_progress(library, [root.id]) != EXIT_OK:
                    return EXIT_INTERRUPTED
                with library.db.read() as session:
                    folders.append(resolve_folder(session, folder).image_filter())
        if len(folders) == 1:
            spec = spec.with_(scope=folders[0])
        elif folders:
            # Several folders: their images together (one that overlaps another counts once).
            with library.db.read() as session:
                spec = spec.with_(scope=[i for flt in folders for i in filtered_ids(session, flt)])
        bar = ProgressBar("Captioning", unit="img")
        try:
            stats, interrupted = run_cancellable(
                lambda cancel: run_caption_job(library, spec, progress=bar, cancel=cancel)
            )
        except ModelLoadError as exc:
            raise UserError(str(exc)) from None
        finally:
            bar.close()
    assert stats is not None
    rate = stats.captioned / stats.seconds if stats.seconds else 0.0
    print(
        ("Cancelled" if stats.cancelled else "Finished")
        + f": {stats.captioned} captioned, {stats.skipped} skipped, {stats.errors} errors"
        + f" in {stats.seconds:.1f} s ({rate:.2f} img/s)"
    )
    for problem in stats.problems[:10]:
        print(f"  error: {problem}", file=sys.stderr)
    if len(stats.problems) > 10:
        print(f"  ... and {len(stats.problems) - 10} more errors", file=sys.stderr)
    if stats.cancelled:
        print("Run the same command again to resume.", file=sys.stderr)
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


# -- parser ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: exit 2, no traceback
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="captiondesk",
        description="Batch-caption photo libraries with a local, fine-tunable captioning model.",
    )
    parser.add_argument("--version", action="version", version=f"CaptionDesk {__version__}")
    parser.add_argument(
        "--library",
        metavar="PATH",
        help="library file (default: $CAPTIONDESK_LIBRARY, else library.db in your data folder)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    add = commands.add_parser("add", help="add folders to the library and scan them")
    add.add_argument("folders", nargs="+", metavar="FOLDER")
    add.add_argument("--no-scan", action="store_true", help="add without scanning")
    add.set_defaults(handler=cmd_add)

    scan = commands.add_parser("scan", help="re-scan library folders (incremental)")
    scan.add_argument("folders", nargs="*", metavar="FOLDER", help="default: every folder")
    scan.set_defaults(handler=cmd_scan)

    status = commands.add_parser("status", help="show counts per folder")
    status.set_defaults(handler=cmd_status)

    caption = commands.add_parser(
        "caption",
        help="caption images with a local model",
        description="Caption images. Re-running resumes: images this model version already "
        "captioned are skipped; a person's captions are never overwritten.",
    )
    caption.add_argument("folders", nargs="*", metavar="FOLDER", help="folders to caption (added if new)")
    caption.add_argument("--all", action="store_true", help="caption the whole library")
    caption.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="ID_OR_PATH",
        help=f"hub id, local model folder or model-version name (default: {DEFAULT_MODEL})",
    )
    caption.add_argument("--adapter", metavar="NAME_OR_PATH", help="a LoRA adapter folder to apply")
    caption.add_argument("--batch-size", type=int, default=8, metavar="N")
    caption.add_argument("--beams", type=int, default=1, metavar="N", help="beam search width (1 = greedy)")
    caption.add_argument("--min-new-tokens", type=int, default=0, metavar="N")
    caption.add_argument("--max-new-tokens", type=int, default=30, metavar="N")
    caption.add_argument("--prompt", metavar="TEXT", help='conditional prefix, e.g. "a photography of"')
    caption.add_argument("--repetition-penalty", type=float, default=1.0, metavar="F")
    caption.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    caption.add_argument(
        "--optimize",
        default="auto",
        choices=["auto", "none"],
        help="CPU speed-ups (int8 Linear layers, fused attention); 'none' for the plain fp32 model",
    )
    caption.add_argument(
        "--overwrite-model-captions",
        action="store_true",
        help="re-caption images this model already captioned (human captions are still kept)",
    )
    caption.set_defaults(handler=cmd_caption)

    # Later features register their own sub-commands (stdlib-only at import time).
    from captiondesk import dataset_commands, training_commands
    from core import selfcheck

    dataset_commands.register(commands)
    training_commands.register(commands)
    selfcheck.register(commands)
    return parser


def _gui_request(argv: list[str], parser: argparse.ArgumentParser) -> list[str] | None:
    """The folders to open when *argv* asks for the desktop app, else None.

    ``captiondesk`` alone, or ``captiondesk [--library PATH] FOLDER...`` (existing
    folders, no subcommand), opens the window.
    """
    subcommands = {"add", "scan", "status", "caption", "export", "import", "write-metadata",
                   "train", "eval", "models", "self-check"}
    rest = list(argv)
    if len(rest) >= 2 and rest[0] == "--library":
        rest = rest[2:]
    elif rest and rest[0].startswith("--library="):
        rest = rest[1:]
    if any(arg.startswith("-") for arg in rest) or any(arg in subcommands for arg in rest):
        return None
    if all(Path(arg).is_dir() for arg in rest):
        return rest
    return None


def _open_gui(argv: list[str], folders: list[str]) -> int:
    try:
        from desktop_app.app import main as gui_main
    except ImportError as exc:
        print(f"captiondesk: error: the desktop app cannot start ({exc})", file=sys.stderr)
        return EXIT_FAILED
    return gui_main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from core import scan_process

    if argv[:1] == [scan_process.FROZEN_COMMAND]:  # the desktop app's scan child (frozen build)
        return scan_process.main(argv[1:])
    from core.library import LibraryError
    from core.migrate import LibraryOpenError

    parser = build_parser()
    gui_folders = _gui_request(argv, parser)
    if gui_folders is not None:
        return _open_gui(argv, gui_folders)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.handler(args)
    except (UserError, LibraryError, LibraryOpenError) as exc:
        print(f"captiondesk: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # python -m captiondesk.cli
    sys.exit(main())
