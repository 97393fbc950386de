"""A training run's resumable state as data: tensors in safetensors, everything else as JSON.

The run folder (``<library>.models/<name>.run``) lies beside the library where anyone
with write access can put files, so nothing in it may be able to run code when read:
no pickle (``torch.load`` with ``weights_only=False``).  :func:`save_state` writes a
nested structure of dicts, lists, tuples, numbers, strings, None and tensors — the
trainable weights and the optimiser, scheduler and grad-scaler ``state_dict()`` — as one
``.safetensors`` file: the tensors as its tensors, the rest as JSON in its metadata header,
each tensor replaced by a reference.  One file, so one ``os.replace`` makes it current.

JSON keeps dict keys of other types than strings (the optimiser's state is keyed by
parameter index) by writing dicts as key/value pairs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["STATE_FILE", "RunStateError", "check_state", "load_state", "save_state"]

#: The run state's file name inside the run folder.
STATE_FILE = "state.safetensors"
_KEY = "captiondesk.run_state"
_FORMAT = 1


class RunStateError(ValueError):
    """A state file that cannot be read as a run state (damaged, foreign or of another format)."""


def _encode(value: Any, tensors: dict[str, Any]) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().to("cpu").contiguous().clone()
        return {"tensor": key}
    if isinstance(value, dict):
        return {"dict": [[_encode_key(k), _encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a run state")


def _encode_key(key: Any) -> Any:
    if key is None or isinstance(key, (bool, int, float, str)):
        return key
    raise TypeError(f"cannot store a {type(key).__name__} dict key in a run state")


def _decode(value: Any, tensors: dict[str, Any]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if isinstance(value, dict):
        if set(value) == {"tensor"}:
            return tensors[value["tensor"]]
        if set(value) == {"tuple"}:
            return tuple(_decode(v, tensors) for v in value["tuple"])
        if set(value) == {"dict"}:
            return {key: _decode(v, tensors) for key, v in value["dict"]}
        raise ValueError("unknown entry")
    return value


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write *state* to *path* (through a temporary file, then ``os.replace``)."""
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    encoded = _encode(state, tensors)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={_KEY: json.dumps({"format": _FORMAT, "state": encoded})})
    os.replace(tmp, path)


def check_state(path: Path) -> None:
    """Raise :class:`RunStateError` unless *path* looks like a readable run state (reads the header only)."""
    _read(path, tensors=False)


def load_state(path: Path) -> dict[str, Any]:
    """The state saved at *path*; :class:`RunStateError` when it is not a readable run state."""
    return _read(path, tensors=True)


def _read(path: Path, *, tensors: bool) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = (handle.metadata() or {}).get(_KEY)
            if header is None:
                raise RunStateError("not a CaptionDesk run state")
            record = json.loads(header)
            if not isinstance(record, dict) or record.get("format") != _FORMAT:
                raise RunStateError("a run state of another format")
            if not tensors:
                return {}
            loaded = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
        state = _decode(record["state"], loaded)
    except RunStateError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to parse means: damaged
        detail = str(exc).splitlines()[0] if str(exc) else "unreadable"
        raise RunStateError(f"damaged ({type(exc).__name__}: {detail})") from None
    if not isinstance(state, dict):
        raise RunStateError("not a CaptionDesk run state")
    return state
