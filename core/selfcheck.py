"""The checks behind ``captiondesk self-check``: is this installation complete?

It reports, without touching the network or the user's library:

* the versions of Python and the libraries CaptionDesk needs (an import failure is fatal);
* the compute device captioning would use (cuda / mps / cpu);
* where the default library lives, and whether the default captioning model is already
  in the Hugging Face cache (a model that is missing is only a note: the first
  ``caption`` run downloads it);
* that the Alembic migrations are present as files and that a temporary library can be
  created, migrated and queried.

Each problem says what broke.  The ``self-check`` command lives in the command-line
package; it adds the desktop app's Qt checks (kept there: ``core`` never imports Qt,
the desktop app or the command line).

Heavy imports (torch, transformers) happen inside the checks, never at import time.
"""

from __future__ import annotations

import platform
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.captioning import DEFAULT_MODEL  # torch-free: core.captioning imports torch lazily

#: (label, module, essential): a failed import of an essential module fails the check.
LIBRARIES: tuple[tuple[str, str, bool], ...] = (
    ("torch", "torch", True),
    ("transformers", "transformers", True),
    ("peft", "peft", True),
    ("PySide6", "PySide6", True),
    ("SQLAlchemy", "sqlalchemy", True),
    ("Alembic", "alembic", True),
    ("Pillow", "PIL", True),
    ("pillow-heif", "pillow_heif", False),
    ("huggingface_hub", "huggingface_hub", True),
    ("optimum", "optimum", False),
    ("pyexiv2", "pyexiv2", False),  # optional: reading/writing photo metadata
)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    essential: bool = True

    @property
    def status(self) -> str:
        if self.ok:
            return "ok"
        return "FAIL" if self.essential else "note"


def frozen() -> bool:
    """Whether this is the packaged (PyInstaller) application."""
    return bool(getattr(sys, "frozen", False))


def _module_version(module: str) -> str:
    import importlib

    mod = importlib.import_module(module)
    version = getattr(mod, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version(module)
    return str(version)


def check_libraries() -> list[Check]:
    checks = [Check("python", True, f"{platform.python_version()} ({sys.executable})")]
    for label, module, essential in LIBRARIES:
        try:
            checks.append(Check(label, True, _module_version(module), essential))
        except Exception as exc:  # noqa: BLE001 - ImportError, or a broken binary (OSError) in a bundle
            checks.append(Check(label, False, f"cannot import {module}: {type(exc).__name__}: {exc}", essential))
    return checks


def check_version() -> Check:
    from core import __version__

    ok = not __version__.startswith("0.0.0")
    detail = __version__ if ok else f"{__version__} (package metadata not found: is captiondesk installed?)"
    return Check("CaptionDesk", ok, detail + (" [frozen]" if frozen() else ""))


def check_device() -> Check:
    try:
        from core.captioning.device import resolve_device

        device = resolve_device("auto")
        detail = device.type
        if device.type == "cuda":
            import torch

            detail += f" ({torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda})"
        elif device.type == "cpu":
            import torch

            detail += f" ({torch.get_num_threads()} threads; CUDA build: {torch.version.cuda or 'no'})"
        return Check("device", True, detail)
    except Exception as exc:  # noqa: BLE001 - a self-check reports every failure
        return Check("device", False, f"{type(exc).__name__}: {exc}")


def check_library_location(path: Path | None = None) -> Check:
    """Where the library is (*path*: the one the command was given, else the default)."""
    from core.library import default_library_path

    path = Path(path) if path is not None else default_library_path()
    state = "exists" if path.exists() else "not created yet"
    return Check("library", True, f"{path} ({state})", essential=False)


def check_model_cache(model: str = DEFAULT_MODEL, cache_dir: str | Path | None = None) -> Check:
    """Whether *model*'s config and weights are in the HF cache (never downloads)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except Exception as exc:  # noqa: BLE001 - a self-check reports every failure
        return Check("default model", False, f"huggingface_hub unavailable: {exc}", essential=False)
    try:
        config = try_to_load_from_cache(model, "config.json", cache_dir=cache_dir)
        weights = [
            try_to_load_from_cache(model, name, cache_dir=cache_dir)
            for name in ("model.safetensors", "pytorch_model.bin")
        ]
    except Exception as exc:  # noqa: BLE001 - a self-check reports every failure
        return Check("default model", False, f"cannot read the Hugging Face cache: {exc}", essential=False)
    if isinstance(config, str) and any(isinstance(w, str) for w in weights):
        folder = Path(config).parent
        return Check("default model", True, f"{model} cached ({folder})", essential=False)
    return Check(
        "default model",
        False,
        f"{model} is not in the Hugging Face cache; the first caption run downloads it (~1 GB)",
        essential=False,
    )


def check_migrations() -> Check:
    try:
        from core.migrate import MIGRATIONS_DIR, head_revision

        missing = [
            name for name in ("env.py", "script.py.mako") if not (MIGRATIONS_DIR / name).is_file()
        ]
        versions = sorted((MIGRATIONS_DIR / "versions").glob("*.py"))
        if missing or not versions:
            what = ", ".join(missing + ([] if versions else ["versions/*.py"]))
            return Check("migrations", False, f"missing in {MIGRATIONS_DIR}: {what}")
        head = head_revision()
        return Check("migrations", True, f"{len(versions)} revisions, head {head} ({MIGRATIONS_DIR})")
    except Exception as exc:  # noqa: BLE001 - a self-check reports every failure
        return Check("migrations", False, f"{type(exc).__name__}: {exc}")


def check_temp_library() -> Check:
    try:
        from core.library import Library

        with tempfile.TemporaryDirectory(prefix="captiondesk-selfcheck-") as tmp, \
                Library(Path(tmp) / "selfcheck.db") as library:
            library.status()
            library.roots()
        return Check("temp library", True, "created, migrated and queried")
    except Exception as exc:  # noqa: BLE001 - a self-check reports every failure
        return Check("temp library", False, f"{type(exc).__name__}: {exc}")


def run_checks(library_path: Path | None = None) -> list[Check]:
    """The checks that need no Qt (the ``self-check`` command adds the desktop app's).

    *library_path*: the library to report (``--library``); None: the default one."""
    checks = [check_version()]
    checks += check_libraries()
    imported = {c.name for c in checks if c.ok}
    checks.append(check_device() if "torch" in imported else Check("device", False, "torch is missing"))
    checks.append(check_library_location(library_path))
    checks.append(check_model_cache())
    checks.append(check_migrations())
    checks.append(check_temp_library())
    return checks


def essential_failures(checks: Sequence[Check]) -> list[Check]:
    """The checks whose failure makes the installation unusable."""
    return [c for c in checks if c.essential and not c.ok]


def format_checks(checks: Sequence[Check]) -> list[str]:
    """One aligned line per check: status, name, detail."""
    width = max(len(c.name) for c in checks)
    return [f"  {check.status:<4}  {check.name:<{width}}  {check.detail}" for check in checks]
