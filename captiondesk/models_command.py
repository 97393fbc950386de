"""``captiondesk models``: list, rename, delete, activate and export trained model versions,
set the library's base model, or download a hub model for an offline machine.

:func:`register` adds the sub-command; this module is light to import (core loads on use).
"""

from __future__ import annotations

import argparse
from typing import Any

from captiondesk.common import EXIT_OK, UserError, add_json_flag, emit_json, open_library, wants_json


def cmd_models(args: argparse.Namespace) -> int:
    from core.training import versions

    action = args.action or "list"
    if action == "download":
        return _download_model(args)
    needed = {"list": (0,), "rename": (2,), "delete": (1,), "activate": (1,), "deactivate": (0,), "base": (0, 1),
              "export": (2,)}
    if action not in needed:
        raise UserError(f"unknown models action '{action}' (use list, rename, delete, activate, deactivate, base, "
                        "export or download)")
    if len(args.names) not in needed[action]:
        usage = {"list": "models list", "rename": "models rename OLD NEW",
                 "delete": "models delete NAME [--with-dependants]",
                 "activate": "models activate NAME", "deactivate": "models deactivate [--kind KIND]",
                 "base": "models base [ID_OR_PATH | default]", "export": "models export NAME OUT"}[action]
        raise UserError(f"usage: captiondesk {usage}")
    if args.with_dependants and action != "delete":
        raise UserError("--with-dependants goes with models delete")
    if args.kind is not None and action != "deactivate":
        raise UserError("--kind goes with models deactivate (activate takes the kind the version learnt)")
    from core.training import current
    with open_library(args) as library:
        try:
            if action == "list":
                rows = versions.list_versions(library)
                now = current.current_model(library)
                if wants_json(args):
                    emit_json({"command": "models list", "exit_code": EXIT_OK,
                               "current": {"model": now.model, "version": now.version, "base_model": now.base_model,
                                           "source": now.source},
                               "versions": [
                        {"name": v.name, "kind": versions.version_kind(v), "active": bool(v.is_active),
                         "method": v.method,
                         "base_model": (v.config or {}).get("trained_from", v.base_model),
                         "metrics": (v.metrics or {}).get("trained", {}),
                         "beats_base": (v.metrics or {}).get("beats_base"), "created_at": v.created_at}
                        for v in rows]})
                    return EXIT_OK
                print(f"Current model: {now.describe()}")
                if not rows:
                    print("No trained model versions yet. Train one with: captiondesk train --base MODEL --name NAME")
                    return EXIT_OK
                print(f"{'':2}{'name':<24}{'method':<8}{'exact':>8}{'CIDEr':>8}  {'created':<17}base model")
                for v in rows:
                    trained = (v.metrics or {}).get("trained", {})
                    em, cider = trained.get("exact_match"), trained.get("cider")
                    base = (v.config or {}).get("trained_from", v.base_model)
                    em_s = f"{em:.3f}" if isinstance(em, (int, float)) else "-"
                    cider_s = f"{cider:.3f}" if isinstance(cider, (int, float)) else "-"
                    kind = versions.version_kind(v)
                    shown = v.name if kind == "caption" else f"{v.name} [{kind}]"
                    print(f"{'* ' if v.is_active else '  '}{shown:<24}{v.method or '-':<8}"
                          f"{em_s:>8}{cider_s:>8}  "
                          f"{v.created_at:%Y-%m-%d %H:%M}  {base}")
            elif action == "rename":
                versions.rename_version(library, *args.names)
                print(f"Renamed {args.names[0]} to {args.names[1]}")
            elif action == "delete":
                was = current.current_model(library)
                deleted = versions.delete_version(library, args.names[0], with_dependants=args.with_dependants)
                print(f"Deleted {', '.join(deleted)}")
                if was.version in deleted:  # without this line the next caption silently uses another model
                    print(f"It was the active model; captioning now uses {current.current_model(library).describe()}")
            elif action == "activate":
                versions.set_active(library, args.names[0])
                version = versions.get_version(library, args.names[0])
                kind = versions.version_kind(version)
                if versions.is_restyler(version):
                    print(f"{args.names[0]} is now the active restyler: restyle uses it without --with")
                elif kind == "caption":
                    print(f"{args.names[0]} is now the active model: caption and eval use it without --model")
                else:
                    print(f"{args.names[0]} is now the active model for {kind}: caption --kind {kind} and eval "
                          f"--kind {kind} use it without --model")
            elif action == "deactivate":
                kind = args.kind or "caption"
                if kind == "caption":
                    now = current.use_base_model(library)
                    print(f"No version is active; captioning uses {now.describe()}")
                else:
                    _require_kind(library, kind)
                    versions.set_active(library, None, kind)
                    now = current.current_model(library, kind)
                    print(f"No version is active for {kind}; caption --kind {kind} uses {now.describe()}")
            elif action == "base":
                if args.names:  # "default" forgets the library's choice
                    current.set_base_model(library, None if args.names[0] == "default" else args.names[0])
                now = current.current_model(library)
                chosen = current.library_base_model(library)
                print(f"Base model: {chosen or 'default'}; current model: {now.describe()}")
            else:
                out = versions.export_merged(library, *args.names)
                print(f"Exported {args.names[0]} as a standalone model to {out}")
        except ValueError as exc:
            raise UserError(str(exc)) from None
    return EXIT_OK


def _require_kind(library, kind: str) -> None:
    """A :class:`UserError` naming the library's kinds when *kind* is none of them."""
    from core.kinds import all_kinds

    with library.db.read() as session:
        kinds = list(all_kinds(session))
    if kind not in kinds:
        raise UserError(f"no caption kind '{kind}' in this library; kinds: {', '.join(kinds)}")


def _download_model(args: argparse.Namespace) -> int:
    """``models download ID --to FOLDER``: a hub model as a folder to carry to an offline machine."""
    from core.captioning.errors import ModelLoadError
    from core.captioning.hub import download_model

    if len(args.names) != 1 or not args.to:
        raise UserError("usage: captiondesk models download MODEL_ID --to FOLDER")
    try:
        folder = download_model(args.names[0], args.to, report=print)
    except ModelLoadError as exc:
        raise UserError(str(exc)) from None
    print(f"Downloaded {args.names[0]} to {folder}; copy that folder to the other machine and caption there "
          f"with --model {folder.name}")
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add ``models`` to the main parser's sub-parsers."""
    models = subparsers.add_parser(
        "models", help="list, rename, delete, activate, deactivate or export trained model versions; "
                       "download a hub model",
        description="models [list] | rename OLD NEW | delete NAME | activate NAME | deactivate [--kind KIND] | "
                    "base [ID_OR_PATH | default] | export NAME OUT | download MODEL_ID --to FOLDER. The active "
                    "version is the library's current model (caption and eval use it without --model); deactivate "
                    "goes back to the library's base model, which base shows or sets. Export writes a merged "
                    "standalone model folder that plain transformers loads; download fetches a Hugging Face hub "
                    "model into a folder to copy to a machine without internet. A version that others are built "
                    "on is not deleted unless --with-dependants deletes them too.")
    models.add_argument("action", nargs="?", metavar="ACTION",
                        help="list (default), rename, delete, activate, deactivate, base, export, download")
    models.add_argument("names", nargs="*", metavar="ARG")
    models.add_argument("--with-dependants", action="store_true",
                        help="delete: also delete the versions built on this one")
    models.add_argument("--to", metavar="FOLDER", help="download: the folder to put the model in")
    models.add_argument("--kind", default=None, metavar="KIND",
                        help="deactivate: clear this caption kind's active version (default: caption's)")
    add_json_flag(models)
    models.set_defaults(handler=cmd_models)
