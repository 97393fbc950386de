"""``captiondesk`` command line: a thin layer over :mod:`core`.

User errors (a bad path, a library from a newer version, ...) print one clear line and
exit with status 2; tracebacks are reserved for bugs.  Long jobs run on a worker thread
so Ctrl-C cancels them cleanly (everything committed so far is kept), and show a
progress bar when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from captiondesk import dataset_commands, selfcheck_command, training_commands
from captiondesk.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UserError,
    open_library,
    print_problems,
    run_with_progress,
)
from core import __version__
from core.captioning import DEFAULT_MODEL  # torch-free: core.captioning imports torch lazily

if TYPE_CHECKING:
    from core.library import Library



def _scan_with_progress(library: Library, root_ids: list[int] | None) -> int:
    stats, interrupted = run_with_progress(
        "Scanning", lambda bar, cancel: library.scan(root_ids, progress=bar, cancel=cancel), unit="file"
    )
    if stats is not None:
        print(stats.summary())
        print_problems(stats.problems)
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


def cmd_add(args: argparse.Namespace) -> int:
    from core.library import LibraryError

    with open_library(args) as library:
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

    with open_library(args) as library:
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
    with open_library(args) as library:
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
    if args.backend != "local" and not args.model:
        raise UserError("name the server's model with --model (e.g. --model llava for Ollama)")
    try:
        # The same spec the GUI builds; validated before the library is touched.
        spec = CaptionJobSpec(
            model=args.model or DEFAULT_MODEL,
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
            backend=args.backend,
            endpoint=args.endpoint,
            max_concurrency=args.max_concurrency,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None

    with open_library(args) as library:
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
        try:
            stats, interrupted = run_with_progress(
                "Captioning", lambda bar, cancel: run_caption_job(library, spec, progress=bar, cancel=cancel)
            )
        except ModelLoadError as exc:
            raise UserError(str(exc)) from None
    assert stats is not None
    rate = stats.captioned / stats.seconds if stats.seconds else 0.0
    print(stats.summary() + f" in {stats.seconds:.1f} s ({rate:.2f} img/s)")
    print_problems(stats.problems, "error")
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
        metavar="ID_OR_PATH",
        help=f"hub id, local model folder or model-version name (default: {DEFAULT_MODEL}); "
        "with --backend openai, the server's model name (required)",
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
    server = caption.add_argument_group(
        "model server", "caption with an OpenAI-compatible server (Ollama, LM Studio, llama-server, vLLM); "
        "the API key, if one is needed, comes from $CAPTIONDESK_API_KEY, $OPENAI_API_KEY or the OS keyring")
    server.add_argument("--backend", default="local", choices=["local", "openai"],
                        help="'openai': send images to --endpoint; --model is the server's model name")
    server.add_argument("--endpoint", metavar="URL", help="server base URL, e.g. http://localhost:11434/v1")
    server.add_argument("--max-concurrency", type=int, default=4, metavar="N",
                        help="requests in flight at once (default 4)")
    caption.set_defaults(handler=cmd_caption)

    # The other command modules register their own sub-commands (light to import).
    dataset_commands.register(commands)
    training_commands.register(commands)
    selfcheck_command.register(commands)
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
