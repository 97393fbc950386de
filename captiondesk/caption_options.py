"""Checks of the `caption` command's model and `--ray` options, made before the library is touched."""

from __future__ import annotations

import argparse
import os

from captiondesk.common import UserError, say

__all__ = ["check_caption_model", "ray_address"]


def check_caption_model(args: argparse.Namespace, model: str, adapter: str | None) -> None:
    """A user error (exit 2) unless *model* (and *adapter*) can be had here, before anything is touched."""
    from core.captioning.errors import ModelLoadError
    from core.captioning.registry import check_model_obtainable

    try:
        check_model_obtainable(model, adapter, report=lambda message: say(args, message))
    except ModelLoadError as exc:
        raise UserError(str(exc)) from None


def ray_address(args: argparse.Namespace) -> str | None:
    """``--ray [ADDRESS]`` → the address for ``run_caption_job_on_ray`` (None: not on Ray).

    Checked before the library is touched: Ray must be installed, and it cannot run a
    model-server backend.  ``--ray`` takes an optional value, so ``--ray FOLDER`` would
    read the folder as the address: a value that is not an address (local, auto,
    HOST:PORT, ray://...) but an existing folder is taken as a folder to caption.
    """
    if args.ray is None:
        if args.ray_actors is not None:
            raise UserError("--ray-actors needs --ray")
        return None
    if args.backend != "local":
        raise UserError("--ray runs the local model on a Ray cluster; it cannot be combined with --backend openai")
    if args.ray_actors is not None and args.ray_actors < 1:
        raise UserError(f"--ray-actors must be at least 1, got {args.ray_actors}")
    address = args.ray
    if address not in ("local", "auto") and ":" not in address:
        if not os.path.isdir(address):
            raise UserError(f"--ray {address!r} is not a Ray address (local, auto, HOST:PORT or ray://HOST:PORT)")
        args.folders = [*args.folders, address]
        address = "local"
    from core.captioning.ray_backend import RayNotInstalledError, import_ray

    try:
        import_ray()
    except RayNotInstalledError as exc:
        raise UserError(str(exc)) from None
    return address
