"""``captiondesk`` command line: a thin layer over :mod:`core`.

Exit status, the same for every command (:data:`common.EXIT_CODES_HELP`): 0 all done,
1 done with failed items, 2 bad arguments or a user error (a bad path, a library from a
newer version, ... — one clear line, no traceback), 3 a runtime failure (the library file
or the disk failed), 130 interrupted.  Tracebacks are reserved for bugs.  Long jobs run
on a worker thread so Ctrl-C, SIGTERM and SIGHUP cancel them cleanly (everything committed so far is kept),
and show a progress bar when stderr is a terminal (plain lines otherwise).  ``--json``
puts one JSON object on stdout for scripts.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from captiondesk import (
    dataset_commands,
    duplicates_command,
    models_command,
    restyle_commands,
    search_commands,
    selfcheck_command,
    training_commands,
)
from captiondesk.caption_options import check_caption_model
from captiondesk.caption_options import ray_address as parse_ray_address
from captiondesk.common import (
    EXIT_BROKEN_PIPE,
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_USAGE,
    UserError,
    add_json_flag,
    emit_json,
    finish_job,
    job_exit_code,
    library_path,
    may_create_library,
    open_library,
    print_problems,
    print_scan_problems,
    quiet_third_party,
    run_with_progress,
    say,
    stop_signals_interrupt,
    wants_json,
)
from core import __version__
from core.captioning import DEFAULT_MODEL  # torch-free: core.captioning imports torch lazily

if TYPE_CHECKING:
    from core.library import Library
    from core.scanner import ScanStats


def _scan(library: Library, root_ids: list[int] | None) -> tuple[ScanStats | None, bool]:
    return run_with_progress(
        "Scanning", lambda bar, cancel: library.scan(root_ids, progress=bar, cancel=cancel), unit="file"
    )


def _scan_with_progress(args: argparse.Namespace, library: Library, root_ids: list[int] | None,
                        command: str = "scan", **extra: Any) -> int:
    stats, interrupted = _scan(library, root_ids)

    def human() -> None:
        if stats is not None:
            print(stats.summary())
            print_scan_problems(stats)

    if stats is not None:
        extra["unreadable"] = stats.unreadable
    return finish_job(args, command, stats, interrupted, human, **extra)


def cmd_add(args: argparse.Namespace) -> int:
    from core.library import LibraryError

    with open_library(args) as library:
        root_ids = []
        added = []
        for folder in args.folders:
            try:
                root = library.add_root(folder)
            except LibraryError as exc:
                raise UserError(str(exc)) from None
            say(args, f"Added {root.path}")
            root_ids.append(root.id)
            added.append(str(root.path))
        if args.no_scan:
            if wants_json(args):
                emit_json({"command": "add", "exit_code": EXIT_OK, "added": added})
            return EXIT_OK
        return _scan_with_progress(args, library, root_ids, "add", added=added)


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
        return _scan_with_progress(args, library, root_ids)


def cmd_status(args: argparse.Namespace) -> int:
    with open_library(args, reading=True) as library:
        rows = library.status()
        if wants_json(args):
            fields = ("images", "uncaptioned", "model", "human", "imported", "changed", "missing", "errors")
            folders = [{"folder": row.path, **{f: getattr(row, f) for f in fields}} for row in rows]
            totals = {f: sum(folder[f] for folder in folders) for f in fields}
            emit_json({"command": "status", "exit_code": EXIT_OK, "library": str(library.path),
                       "folders": folders, "total": totals})
            return EXIT_OK
        print(f"Library: {library.path}")
        if not rows:
            print("No folders yet. Add one with: captiondesk add FOLDER")
            return EXIT_OK
        headers = ("images", "uncaptioned", "model", "human", "imported", "changed", "missing", "errors")
        print(f"{'folder':<40} " + " ".join(f"{h:>11}" for h in headers))
        totals = [0] * len(headers)
        for row in rows:
            values = (row.images, row.uncaptioned, row.model, row.human, row.imported, row.changed, row.missing,
                      row.errors)
            totals = [t + v for t, v in zip(totals, values, strict=True)]
            print(f"{_shorten(row.path, 40):<40} " + " ".join(f"{v:>11}" for v in values))
        if len(rows) > 1:
            print(f"{'total':<40} " + " ".join(f"{v:>11}" for v in totals))
    return EXIT_OK


def cmd_caption(args: argparse.Namespace) -> int:
    from core.captioning.engine import run_caption_job
    from core.captioning.job_spec import CaptionJobSpec, GenerationSettings
    from core.captioning.registry import resolve_model
    from core.jobs import count_phrase
    from core.library import LibraryError
    from core.queries import FolderNotInLibraryError, filtered_ids, resolve_folder

    if bool(args.folders) == bool(args.all):
        raise UserError("name the folders to caption, or --all for the whole library")
    if args.backend != "local" and not args.model:
        raise UserError("name the server's model with --model (e.g. --model llava for Ollama)")
    ray_address = parse_ray_address(args)
    try:
        # The same spec the GUI builds; validated before the library is touched.
        spec = CaptionJobSpec(
            # Without --model: the library's current model, filled in once the library is open.
            model=args.model or DEFAULT_MODEL,
            adapter=args.adapter,
            generation=GenerationSettings(
                num_beams=args.beams,
                min_new_tokens=args.min_new_tokens,
                max_new_tokens=args.max_new_tokens,
                repetition_penalty=args.repetition_penalty,
            ),
            batch_size=args.batch_size,
            device=args.device,
            overwrite_model_captions=args.overwrite_model_captions,
            optimize=args.optimize,
            runtime=args.runtime,
            backend=args.backend,
            endpoint=args.endpoint,
            max_concurrency=args.max_concurrency,
            server_timeout=args.server_timeout,
            max_caption_chars=args.max_caption_chars,
            preset=args.preset,
            prompt_template=args.prompt,
            kind=args.kind,
            check_views=args.check_views,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if spec.check_views and ray_address is not None:
        raise UserError("--check-views runs in this process only, not with --ray")

    # Exit 2 means nothing done: a model that cannot be had is found out before the library
    # is created or a folder added (a new library has no version names to resolve).
    checks_model = args.backend == "local" and ray_address is None
    if checks_model and not library_path(args).exists() and may_create_library(args):
        check_caption_model(args, spec.model, spec.adapter)
        checks_model = False
    with open_library(args) as library:
        if not args.model:
            from core.training.current import current_model

            current = current_model(library, spec.kind)
            # An --adapter of its own goes on the base model, not on top of the active version.
            spec = spec.with_(model=current.model if args.adapter is None else current.base_model)
            say(args, f"Model: {current.describe() if args.adapter is None else spec.model + ' + ' + args.adapter}")
        if checks_model:
            resolved = resolve_model(library, spec.model, spec.adapter)
            check_caption_model(args, resolved.model_name, resolved.adapter)
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
                say(args, f"Added {root.path}")
                scan_stats, interrupted = _scan(library, [root.id])
                if scan_stats is not None:
                    say(args, scan_stats.summary())
                    print_scan_problems(scan_stats)
                if job_exit_code(scan_stats, interrupted) == EXIT_INTERRUPTED:
                    if wants_json(args):
                        emit_json({"command": "caption", "exit_code": EXIT_INTERRUPTED, "cancelled": True,
                                   "job_id": None, "counts": {}, "problems": [], "seconds": None})
                    return EXIT_INTERRUPTED
                with library.db.read() as session:
                    folders.append(resolve_folder(session, folder).image_filter())
        if len(folders) == 1:
            spec = spec.with_(scope=folders[0])
        elif folders:
            # Several folders: their images together (one that overlaps another counts once).
            with library.db.read() as session:
                spec = spec.with_(scope=[i for flt in folders for i in filtered_ids(session, flt)])
        if ray_address is not None:
            from core.captioning.ray_backend import RayClusterError, run_caption_job_on_ray

            def job(bar: Any, cancel: Any) -> Any:
                try:
                    return run_caption_job_on_ray(library, spec, address=ray_address, actors=args.ray_actors,
                                                  progress=bar, cancel=cancel)
                except RayClusterError as exc:
                    raise UserError(str(exc)) from None
        else:
            def job(bar: Any, cancel: Any) -> Any:
                return run_caption_job(library, spec, progress=bar, cancel=cancel)
        # A model that cannot be loaded, a preset it cannot take: user-facing, exit 2 in main.
        stats, interrupted = run_with_progress("Captioning", job)
    print_problems(stats.problems if stats is not None else [], "error")
    print_problems(stats.notes if stats is not None else [], "length")

    def human() -> None:
        if stats is not None:
            rate = stats.captioned / stats.seconds if stats.seconds else 0.0
            print(stats.summary() + f" in {stats.seconds:.1f} s ({rate:.2f} img/s)")
            if stats.left_to_other_runs:
                print(f"  ({count_phrase(stats.left_to_other_runs, 'photo was', 'photos were')} left to another "
                      "caption run on this library at the same time)", file=sys.stderr)
            already = stats.skipped - stats.left_to_other_runs
            if already and not stats.captioned and not spec.overwrite_model_captions:
                # A new preset or prompt does not re-caption by itself: say so.
                print(f"  ({count_phrase(already, 'photo', 'photos')} already captioned by this model or by a "
                      "person were skipped; add --overwrite-model-captions to caption the model's ones again, "
                      "e.g. with another --preset or --prompt)", file=sys.stderr)

    code = finish_job(args, "caption", stats, interrupted, human,
                      model=spec.model, adapter=spec.adapter,
                      left_to_other_runs=stats.left_to_other_runs if stats is not None else 0)
    if code == EXIT_INTERRUPTED:
        print("Run the same command again to resume.", file=sys.stderr)
    return code


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
        description="Batch-caption photo libraries with a local, fine-tunable captioning model. "
        "Without a command, opens the desktop app.",
        epilog=EXIT_CODES_HELP + " --json (on status, models list, eval and every job) prints one JSON "
        "object on stdout; progress and messages stay on stderr.",
    )
    parser.add_argument("--version", action="version", version=f"CaptionDesk {__version__}")
    parser.add_argument(
        "--library",
        metavar="PATH",
        help="library file (default: $CAPTIONDESK_LIBRARY, else library.db in your data folder)",
    )
    parser.add_argument(
        "--verbose", action="store_true",
        help="keep other libraries' progress bars and warnings on stderr when it is not a terminal",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    add = commands.add_parser("add", help="add folders to the library and scan them")
    add.add_argument("folders", nargs="+", metavar="FOLDER")
    add.add_argument("--no-scan", action="store_true", help="add without scanning")
    add_json_flag(add)
    add.set_defaults(handler=cmd_add)

    scan = commands.add_parser("scan", help="re-scan library folders (incremental)")
    scan.add_argument("folders", nargs="*", metavar="FOLDER", help="default: every folder")
    add_json_flag(scan)
    scan.set_defaults(handler=cmd_scan)

    status = commands.add_parser("status", help="show counts per folder")
    add_json_flag(status)
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
        help="hub id, local model folder or model-version name (default: the library's current model: the "
        f"active version, else its base model, else {DEFAULT_MODEL}); with --backend openai, the server's "
        "model name (required)",
    )
    caption.add_argument("--adapter", metavar="NAME_OR_PATH", help="a LoRA adapter folder to apply")
    caption.add_argument("--batch-size", type=int, default=8, metavar="N")
    caption.add_argument("--beams", type=int, default=1, metavar="N", help="beam search width (1 = greedy)")
    caption.add_argument("--min-new-tokens", type=int, default=0, metavar="N")
    caption.add_argument("--max-new-tokens", type=int, default=30, metavar="N")
    from core.captioning.confidence import MAX_VIEW_CHECKS
    from core.captioning.job_spec import DEFAULT_SERVER_TIMEOUT, RUNTIMES
    from core.captioning.presets import PRESETS, VARIABLES
    from core.captions import DEFAULT_MODEL_CAPTION_CHARS, MAX_CAPTION_CHARS

    caption.add_argument("--preset", choices=list(PRESETS), metavar="NAME",
                         help=f"kind of caption: {', '.join(PRESETS)} (a family supports some of them; "
                              "prefix models such as BLIP: short, alt_text, t2i_prompt)")
    caption.add_argument("--kind", default="caption", metavar="KIND",
                         help="which value to write: caption (default), alt_text, extended_description, title, "
                              "keywords or a kind of your own; others than caption need a model that takes a prompt")
    caption.add_argument("--prompt", metavar="TEMPLATE",
                         help='your own prompt: a prefix for BLIP-like models ("a photography of"), an instruction '
                              f"for instruction models; per-image variables: {', '.join('{' + v + '}' for v in VARIABLES)}")
    caption.add_argument("--repetition-penalty", type=float, default=1.0, metavar="F")
    caption.add_argument("--max-caption-chars", type=int, default=DEFAULT_MODEL_CAPTION_CHARS, metavar="N",
                         help=f"a longer caption is that photo's error, not stored (default "
                              f"{DEFAULT_MODEL_CAPTION_CHARS}, at most {MAX_CAPTION_CHARS})")
    caption.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    caption.add_argument(
        "--optimize",
        default="auto",
        choices=["auto", "none"],
        help="CPU speed-ups (int8 Linear layers, fused attention); 'none' for the plain fp32 model",
    )
    caption.add_argument(
        "--runtime",
        default="torch",
        choices=list(RUNTIMES),
        help="'openvino' runs the vision tower (BLIP, SmolVLM, Florence-2, Qwen2-VL) and the text model (BLIP, SmolVLM, "
             "Qwen2-VL) on OpenVINO on the CPU (pip install 'captiondesk[openvino]'; converted once, cached beside "
             "the model); 'openvino-bf16' the tower in bf16 and the text model in bf16 on torch (CPUs with "
             "avx512_bf16 or AMX only; captions may differ from fp32's); 'openvino-int8' in int8 (vision towers: weights "
             "and activations; text models: int8 weights); 'auto' picks per model family what measured faster",
    )
    caption.add_argument(
        "--check-views", type=int, default=0, metavar="N",
        help=f"caption each photo again from N slightly shifted views (0-{MAX_VIEW_CHECKS}; N+1 times the work) and "
             "rank captions the views disagree with first in the review queue: finds one-word errors the "
             "model's own probabilities miss",
    )
    caption.add_argument(
        "--overwrite-model-captions",
        action="store_true",
        help="re-caption images this model already captioned (human captions are still kept)",
    )
    add_json_flag(caption)
    server = caption.add_argument_group(
        "model server", "caption with an OpenAI-compatible server (Ollama, LM Studio, llama-server, vLLM); "
        "the API key, if one is needed, comes from $CAPTIONDESK_API_KEY, $OPENAI_API_KEY or the OS keyring")
    server.add_argument("--backend", default="local", choices=["local", "openai"],
                        help="'openai': send images to --endpoint; --model is the server's model name")
    server.add_argument("--endpoint", metavar="URL", help="server base URL, e.g. http://localhost:11434/v1")
    server.add_argument("--max-concurrency", type=int, default=4, metavar="N",
                        help="requests in flight at once (default 4)")
    server.add_argument("--server-timeout", type=float, default=DEFAULT_SERVER_TIMEOUT, metavar="SECONDS",
                        help=f"most time one request may take, answer included (default {DEFAULT_SERVER_TIMEOUT:g})")
    cluster = caption.add_argument_group(
        "Ray cluster", "caption on a Ray cluster (pip install 'captiondesk[ray]'); every worker must see the "
        "photos at the same paths as this machine (shared storage)")
    cluster.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                         help="run decoding and the model on Ray actors: alone, a local Ray instance; "
                         "'auto' or HOST:PORT or ray://HOST:PORT joins a running cluster")
    cluster.add_argument("--ray-actors", type=int, metavar="N",
                         help="actors in the pool (default: one per GPU, else one per node using all its cores)")
    caption.set_defaults(handler=cmd_caption)

    # The other command modules register their own sub-commands (light to import).
    dataset_commands.register(commands)
    training_commands.register(commands)
    models_command.register(commands)
    restyle_commands.register(commands)
    duplicates_command.register(commands)
    search_commands.register(commands)
    selfcheck_command.register(commands)
    return parser


def _gui_request(argv: list[str], parser: argparse.ArgumentParser) -> list[str] | None:
    """The folders to open when *argv* asks for the desktop app, else None.

    ``captiondesk`` alone, or ``captiondesk [--library PATH] FOLDER...`` (existing
    folders, no subcommand), opens the window.
    """
    subcommands = {"add", "scan", "status", "caption", "export", "import", "write-metadata",
                   "train", "eval", "models", "self-check", "index", "search"}
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


def _missing_display() -> bool:
    """True on Linux/BSD when no X11 or Wayland display is set (and Qt is not told otherwise).

    Checked before importing Qt: without a display Qt's xcb plugin aborts the process
    (SIGABRT, exit 134) with a message about plugins that does not say what to do.
    """
    if sys.platform in ("win32", "darwin") or os.environ.get("QT_QPA_PLATFORM"):
        return False
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _open_gui(argv: list[str], folders: list[str]) -> int:
    if _missing_display():
        print("captiondesk: error: no display found (DISPLAY/WAYLAND_DISPLAY unset), so the window cannot open; "
              "run headless with the commands instead, e.g. 'captiondesk caption FOLDER' "
              "(see 'captiondesk --help')", file=sys.stderr)
        return EXIT_USAGE
    try:
        from desktop_app.app import main as gui_main
    except ImportError as exc:
        print(f"captiondesk: error: the desktop app cannot start ({exc})", file=sys.stderr)
        return EXIT_FAILED
    return gui_main(argv)


def _fault_message(args: argparse.Namespace, exc: BaseException) -> str | None:
    """One line for a fault of the library file or the disk, None for anything else."""
    import errno
    import sqlite3

    from sqlalchemy.exc import DBAPIError

    from core.db import ReadOnlyLibraryError, explain_database_error

    if isinstance(exc, (DBAPIError, sqlite3.Error, ReadOnlyLibraryError)):
        return explain_database_error(library_path(args), exc)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
        where = f" ({exc.filename})" if exc.filename else ""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"the disk is full{where}; free some space and run the command again"
        return f"{exc.strerror}{where}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """``captiondesk ARGV`` (``sys.argv[1:]`` when None); returns the exit status."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # Ctrl-C while starting up (importing SQLAlchemy, torch...), before the command's
        # own handling: nothing was done, so no traceback, just the status.
        print("\nInterrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    called_as_program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    from core import scan_process

    if argv[:1] == [scan_process.FROZEN_COMMAND]:  # the desktop app's scan child (frozen build)
        return scan_process.main(argv[1:])
    from core.errors import UserFacingError

    parser = build_parser()
    gui_folders = _gui_request(argv, parser)
    if gui_folders is not None:
        return _open_gui(argv, gui_folders)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if called_as_program:
        # Process-wide (environment, warning filters): only for the real command, never
        # for a caller embedding main() (tests, the desktop app).
        quiet_third_party(args.verbose)
    try:
        # Only around a command: the window (above) keeps the toolkit's own signal handling.
        with stop_signals_interrupt():
            code = args.handler(args)
            sys.stdout.flush()  # a reader that went away shows here, not as a warning at exit
            return code
    except UserFacingError as exc:  # UserError and every core error written for the person
        return _fail(args, EXIT_USAGE, str(exc))
    except BrokenPipeError:
        # `| head` took what it wanted: not a fault of the library or the disk, so no error line.
        _drop_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:  # Ctrl-C outside a job (loading, opening the library...)
        print("\nInterrupted.", file=sys.stderr)
        if wants_json(args):
            emit_json({"command": args.command, "exit_code": EXIT_INTERRUPTED, "cancelled": True})
        return EXIT_INTERRUPTED
    except Exception as exc:
        # The library file, its disk or its lock failing (full, read-only, damaged,
        # busy) is not a bug: one line that says what is wrong.  Anything else is.
        message = _fault_message(args, exc)
        if message is None and not _is_runtime_failure(exc):
            raise  # a bug: the traceback is what a report needs
        if args.verbose:
            import traceback

            traceback.print_exc()
        return _fail(args, EXIT_RUNTIME, message or _runtime_message(exc))


def _drop_stdout() -> None:
    """Point stdout at the null device, so the flush at exit does not fail on the closed pipe again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a caller embedding main()): nothing is flushed at exit
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    os.close(null)


def _fail(args: argparse.Namespace, code: int, message: str) -> int:
    """One ``captiondesk: error:`` line on stderr (and the ``--json`` object); returns *code*."""
    print(f"captiondesk: error: {message}", file=sys.stderr)
    if wants_json(args):
        emit_json({"command": args.command, "exit_code": code, "error": message})
    return code


def _runtime_message(exc: BaseException) -> str:
    """One line: what failed (the driver's own words, not SQLAlchemy's SQL echo)."""
    detail = str(getattr(exc, "orig", None) or exc) or type(exc).__name__
    detail = " ".join(detail.split())
    return f"the library file or the disk failed: {detail} (work committed before this is kept)"


def _is_runtime_failure(exc: BaseException) -> bool:
    """The disk or the library file failed (not the user's input, not a bug in CaptionDesk)."""
    if isinstance(exc, (OSError, MemoryError)):
        return True
    try:
        from sqlalchemy.exc import DBAPIError
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        return False
    return isinstance(exc, DBAPIError)


if __name__ == "__main__":  # python -m captiondesk.cli
    sys.exit(main())
