"""Trained model versions: where they are stored, and list / rename / delete / activate / export.

A version is a :class:`~core.models.ModelVersion` row plus a folder beside the library,
``<library folder>/<library stem>.models/<name>``:

* **LoRA / QLoRA**: the folder holds the adapter (``adapter_config.json`` +
  ``adapter_model.safetensors``, from ``save_pretrained``); ``base_model`` is the hub id
  or absolute folder of the base model and ``adapter_path`` the adapter folder, so
  ``load_captioner(base_model, adapter=adapter_path)`` — which is what
  :func:`core.captioning.engine.resolve_model` does for ``--model NAME`` — loads it.
* **Full fine-tuning**: the folder is a complete model + processor; ``base_model`` is
  that folder and ``adapter_path`` is None (the model it was trained from is in
  ``config["trained_from"]``).

Renaming changes only the name: the folder stays where it is, so captions written by the
version keep pointing at existing files.

``ModelVersion.family`` is the family's one id (:attr:`ModelFamily.id
<core.captioning.families.base.ModelFamily.id>`, e.g. ``blip-2``).  Versions saved
before the ids were unified spell two of them differently (``blip2``,
``vision_encoder_decoder``); every read here normalises them
(:func:`core.captioning.families.canonical_family_id`), so callers see one spelling.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm.attributes import set_committed_value

from core.captioning.families import canonical_family_id
from core.models import ModelVersion

if TYPE_CHECKING:
    from core.library import Library

__all__ = [
    "VersionError",
    "delete_version",
    "export_merged",
    "get_active_version",
    "get_version",
    "list_versions",
    "models_dir",
    "rename_version",
    "run_dir",
    "save_version",
    "set_active",
    "validate_name",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")


class VersionError(Exception):
    """A version operation that cannot be done (the message says why)."""


def models_dir(library: Library) -> Path:
    """``<library stem>.models`` beside the library file."""
    return library.path.with_name(library.path.stem + ".models")


def run_dir(library: Library, name: str) -> Path:
    """Where an unfinished training run keeps its resumable state."""
    return models_dir(library) / f"{name}.run"


def validate_name(name: str) -> str:
    """A version name: letters, digits, ``. _ + -``, at most 100 characters, not path-like."""
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith((".run", ".saving")):
        raise VersionError(
            f"'{name}' is not a usable model name: use letters, digits and . _ + - "
            "(starting with a letter or digit, at most 100 characters)")
    return name


def _normalised(version: ModelVersion | None) -> ModelVersion | None:
    """``version`` with a legacy family spelling replaced by the canonical id (not written back)."""
    if version is not None and version.family is not None:
        set_committed_value(version, "family", canonical_family_id(version.family))
    return version


def get_version(library: Library, name: str) -> ModelVersion | None:
    with library.db.read() as session:
        return _normalised(session.scalar(select(ModelVersion).where(ModelVersion.name == name)))


def _require(library: Library, name: str) -> ModelVersion:
    version = get_version(library, name)
    if version is None:
        known = ", ".join(v.name for v in list_versions(library)) or "none yet"
        raise VersionError(f"there is no model version named '{name}' (known: {known})")
    return version


def list_versions(library: Library) -> list[ModelVersion]:
    with library.db.read() as session:
        rows = session.scalars(select(ModelVersion).order_by(ModelVersion.created_at, ModelVersion.id))
        return [v for v in map(_normalised, rows) if v is not None]


def get_active_version(library: Library) -> ModelVersion | None:
    with library.db.read() as session:
        return _normalised(session.scalar(select(ModelVersion).where(ModelVersion.is_active.is_(True))))


def _unique_folder(parent: Path, name: str) -> Path:
    folder, i = parent / name, 2
    while folder.exists():
        folder, i = parent / f"{name}-{i}", i + 1
    return folder


def _save_processor(captioner: Any, folder: Path) -> None:
    processor = getattr(captioner, "processor", None)
    if processor is not None and hasattr(processor, "save_pretrained"):
        processor.save_pretrained(folder)
    tokenizer = getattr(captioner, "tokenizer", None)
    if tokenizer is not None and getattr(processor, "tokenizer", None) is None:
        tokenizer.save_pretrained(folder)  # e.g. ViT-GPT2: image processor and tokenizer apart


def save_version(
    library: Library,
    *,
    name: str,
    base_model: str,
    model: Any,
    captioner: Any,
    method: str,
    family: str,
    config: dict[str, Any],
    metrics: dict[str, Any],
    data_snapshot: dict[str, Any],
) -> ModelVersion:
    """Save *model* (a PeftModel for LoRA, the transformers model for full) and register it."""
    validate_name(name)
    parent = models_dir(library)
    parent.mkdir(parents=True, exist_ok=True)
    folder = _unique_folder(parent, name)
    tmp = parent / f"{name}.saving"
    shutil.rmtree(tmp, ignore_errors=True)
    if method in ("lora", "qlora"):
        model.save_pretrained(tmp)
    else:
        model.save_pretrained(tmp)
        _save_processor(captioner, tmp)
    tmp.replace(folder)
    lora = method in ("lora", "qlora")
    version = ModelVersion(
        name=name,
        base_model=base_model if lora else str(folder),
        adapter_path=str(folder) if lora else None,
        family=canonical_family_id(family),
        method=method,
        config={**config, "trained_from": base_model},
        metrics=metrics,
        data_snapshot=data_snapshot,
        is_active=False,
    )
    with library.db.write() as session:
        session.add(version)
        session.flush()
        session.expunge(version)
    return version


def rename_version(library: Library, old: str, new: str) -> None:
    validate_name(new)
    _require(library, old)
    if get_version(library, new) is not None:
        raise VersionError(f"a model version named '{new}' already exists")
    with library.db.write() as session:
        session.execute(update(ModelVersion).where(ModelVersion.name == old).values(name=new))


def delete_version(library: Library, name: str, *, delete_files: bool = True) -> None:
    """Forget a version; its folder is removed when it lies in the library's models folder."""
    version = _require(library, name)
    with library.db.write() as session:
        row = session.get(ModelVersion, version.id)
        if row is not None:
            session.delete(row)
    if delete_files:
        parent = models_dir(library).resolve()
        for path in (version.adapter_path, version.base_model):
            if path and Path(path).is_dir() and Path(path).resolve().is_relative_to(parent):
                shutil.rmtree(path, ignore_errors=True)


def set_active(library: Library, name: str | None) -> None:
    """Make *name* the active version (the GUI's default model); None clears it."""
    target = _require(library, name).id if name is not None else None
    with library.db.write() as session:
        session.execute(update(ModelVersion).values(is_active=False))
        if target is not None:
            session.execute(update(ModelVersion).where(ModelVersion.id == target).values(is_active=True))


def export_merged(library: Library, name: str, out: Path | str, *, device: str = "cpu") -> Path:
    """Write version *name* as a standalone model folder that plain transformers loads.

    LoRA versions are merged into the base weights (``merge_and_unload``); the processor
    is saved beside the weights.  *out* must not exist yet (or be an empty folder).
    """
    version = _require(library, name)
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise VersionError(f"{out} already exists and is not an empty folder")
    if version.adapter_path is None:
        if out.exists():
            out.rmdir()
        shutil.copytree(version.base_model, out)
        return out
    from core.captioning import load_captioner

    # load_captioner applies the adapter with merge_and_unload (see registry._apply_adapter).
    captioner = load_captioner(version.base_model, adapter=version.adapter_path, device=device, optimize="none")
    try:
        tmp = out.with_name(out.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        captioner.model.save_pretrained(tmp)
        _save_processor(captioner, tmp)
        if out.exists():
            out.rmdir()
        tmp.replace(out)
    finally:
        captioner.close()
    return out
