"""``captiondesk restyle``: rewrite the library's model captions in a style (the restyle stage;
``train --restyler``, in captiondesk/training_commands.py, learns a restyler from the corrections).

Light to import: the restyle code loads on use.  Like the other commands, a user mistake
prints one line and exits 2; Ctrl-C stops after the current batch (run it again to resume).
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
    say,
)


def cmd_restyle(args: argparse.Namespace) -> int:
    from core.captioning.errors import ModelLoadError
    from core.queries import FolderNotInLibraryError, filtered_ids, resolve_folder
    from core.restyle.job import run_restyle_job
    from core.restyle.spec import RestyleError, RestyleSpec

    if bool(args.folders) == bool(args.all):
        raise UserError("name the folders whose captions to restyle, or --all for the whole library")
    with open_library(args) as library:
        restyler = args.restyler
        if restyler is None:
            from core.training.versions import get_active_restyler

            active = get_active_restyler(library)
            if active is None:
                raise UserError("name the restyler with --with (a restyler version, a text model folder or hub id), "
                                "or activate a restyler version with `models activate NAME`")
            restyler = active.name
            say(args, f"Restyler: {restyler} (the active restyler)")
        scope: Any = None
        try:
            with library.db.read() as session:
                filters = [resolve_folder(session, folder).image_filter() for folder in args.folders]
                if len(filters) == 1:
                    scope = filters[0]
                elif filters:
                    scope = [i for flt in filters for i in filtered_ids(session, flt)]
        except FolderNotInLibraryError as exc:
            raise UserError(str(exc)) from None
        try:
            spec = RestyleSpec(restyler=restyler, style=args.style, scope=scope, backend=args.backend,
                               endpoint=args.endpoint, batch_size=args.batch_size, device=args.device,
                               max_new_tokens=args.max_new_tokens, max_concurrency=args.max_concurrency)
            stats, interrupted = run_with_progress(
                "Restyling", lambda bar, cancel: run_restyle_job(library, spec, progress=bar, cancel=cancel))
        except (RestyleError, ModelLoadError, ValueError) as exc:
            raise UserError(str(exc)) from None
    print_problems(stats.problems if stats is not None else [], "error")

    def human() -> None:
        if stats is not None:
            print(stats.summary() + f" in {stats.seconds:.1f} s")
            if stats.skipped and not stats.restyled:
                print("  (captions a person wrote or accepted are never restyled, nor those this restyler "
                      "already wrote in this style)", file=sys.stderr)

    return finish_job(args, "restyle", stats, interrupted, human, restyler=restyler, style=args.style)


def register(subparsers: Any) -> None:
    restyle = subparsers.add_parser(
        "restyle", help="rewrite model captions in a style with a text language model (the restyle stage)",
        description="Rewrite the current model captions of the folders (or --all) with a restyler: a trained "
        "restyler version (train --restyler), any local causal language model with a --style prompt, or a "
        "server chat model (--backend openai). A person's caption is never restyled; the restyled caption "
        "goes to review like any model caption, its provenance naming both stages.")
    restyle.add_argument("folders", nargs="*", metavar="FOLDER", help="library folders whose captions to restyle")
    restyle.add_argument("--all", action="store_true", help="restyle the whole library")
    restyle.add_argument("--with", dest="restyler", metavar="MODEL_OR_VERSION",
                         help="a restyler version, a text model folder or hub id, or the server's model name "
                         "(default: the active restyler version)")
    restyle.add_argument("--style", metavar="PROMPT",
                         help="the style instruction (default: a trained version's own, else a plain house-style "
                         "instruction)")
    restyle.add_argument("--backend", choices=["local", "openai"], default="local",
                         help="openai: a chat model on an OpenAI-compatible server (--endpoint)")
    restyle.add_argument("--endpoint", metavar="URL", help="the server's URL, e.g. http://localhost:11434/v1")
    restyle.add_argument("--batch-size", type=int, default=8, metavar="N")
    restyle.add_argument("--max-new-tokens", type=int, default=60, metavar="N")
    restyle.add_argument("--max-concurrency", type=int, default=4, metavar="N", help="server requests in flight")
    restyle.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    add_json_flag(restyle)
    restyle.set_defaults(handler=cmd_restyle)
