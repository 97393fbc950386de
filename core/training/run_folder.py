"""A training run's folder (``<library>.models/<name>.run``): created, checked before a
resume (same settings and data, CaptionDesk's, current format) or removed after a run
that failed before it saved any state."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import TrainingConfig
from .data import TrainingData
from .result import TrainingError
from .run_state import STATE_FILE, RunStateError, check_state

if TYPE_CHECKING:
    from core.library import Library

#: Owner-marker job name of run folders.
RUN_JOB = "train"
#: Files of the earlier, pickled run format: never loaded.
_PICKLED_STATE = ("state.pt", "best.pt")


def _unusable_run(name: str, run_dir: Path, why: str) -> TrainingError:
    return TrainingError(f"the unfinished run '{name}' cannot be resumed: {run_dir} {why}; start over with the "
                         "same command and --restart (or choose another --name)")


def _open_run_folder(library: Library, name: str, base: str, config: TrainingConfig, data: TrainingData | Any,
                     extra: dict[str, Any] | None = None) -> Path:
    """The run folder, created or (same settings and data, CaptionDesk's, current format) reused to resume.

    *data*: anything with a ``snapshot()`` (training data, a restyler's pairs); *extra*: more that
    must match to resume (a restyler's target and style)."""
    from core import ownership

    from . import versions

    run_dir = versions.run_dir(library, name)
    key = {**_config_key(base, config, data), **(extra or {})}
    if run_dir.is_symlink() or (run_dir.exists() and not run_dir.is_dir()):
        raise _unusable_run(name, run_dir, "is not a folder CaptionDesk made")
    if run_dir.is_dir():
        contents = [p.name for p in run_dir.iterdir()]
        if any(old in contents for old in _PICKLED_STATE):
            raise _unusable_run(name, run_dir, "holds training state in an old format that is no longer loaded")
        if contents and ownership.owner(run_dir) is None:
            raise _unusable_run(name, run_dir, "is not a folder CaptionDesk made")
        if (run_dir / "run.json").is_file():
            try:
                saved = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise _unusable_run(name, run_dir, "is damaged (run.json unreadable)") from None
            if saved != json.loads(json.dumps(key)):
                raise TrainingError(
                    f"an unfinished run named '{name}' exists with different settings or data ({run_dir}); "
                    "re-run it with the same settings to resume, choose another --name, or start over with --restart")
        elif (run_dir / STATE_FILE).exists():
            raise _unusable_run(name, run_dir, "is damaged (run.json missing)")
        if (run_dir / STATE_FILE).exists():
            try:
                check_state(run_dir / STATE_FILE)  # before the model loads: a damaged file fails fast
            except RunStateError as exc:
                raise _unusable_run(name, run_dir / STATE_FILE, f"is {exc}") from None
    ownership.make_owned_dir(run_dir, RUN_JOB, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps(key), encoding="utf-8")
    return run_dir


def _config_key(base: str, config: TrainingConfig, data: TrainingData | Any) -> dict[str, Any]:
    """What must match for a run folder to be resumed."""
    return {"base_model": base, "config": config.to_dict(), "data": data.snapshot()}


def _remove_if_stateless(run_dir: Path) -> None:
    """After a failure: the run folder goes unless it holds saved state to resume from."""
    from core import ownership

    if ownership.owner(run_dir) is not None and not (run_dir / STATE_FILE).exists():
        shutil.rmtree(run_dir, ignore_errors=True)
