"""Trained model versions: where they are stored, and list / rename / delete / activate / export.

A version is a :class:`~core.models.ModelVersion` row plus a folder beside the library,
``<library folder>/<library stem>.models/<name>``:

* **LoRA / QLoRA**: the folder holds the adapter (``adapter_config.json`` +
  ``adapter_model.safetensors``, from ``save_pretrained``); ``base_model`` is the hub id
  or absolute folder of the base model and ``adapter_path`` the adapter folder, so
  ``load_captioner(base_model, adapter=adapter_path)`` — which is what
  :func:`core.captioning.registry.resolve_model` does for ``--model NAME`` — loads it.
* **Full fine-tuning**: the folder is a complete model + processor; ``base_model`` is
  that folder and ``adapter_path`` is None (the model it was trained from is in
  ``config["trained_from"]``).

Each version learnt one caption kind (:mod:`core.kinds`; ``config["kind"]``, ``caption`` for
versions saved before kinds existed, :func:`version_kind`), and each kind has its own active
version: activating one replaces only the active version of its kind.

Renaming changes only the name: the folder stays where it is, so captions written by the
version keep pointing at existing files.

Deleting removes only the version's own folder (the adapter of a LoRA version, the model
of a full one).  A full version that LoRA versions are built on (their ``base_model`` is
its folder) is not deleted while they exist: :func:`delete_version` refuses naming them,
unless asked to delete them too (``with_dependants``, ``models delete --with-dependants``).

Folders made on the way (``NAME.saving``, the hidden ``.OUT.partial-*`` of an export)
carry CaptionDesk's owner marker (:mod:`core.ownership`); only marked ones whose process
is gone are ever removed, never a folder of the same name that a person made.

``ModelVersion.family`` is the family's one id (:attr:`ModelFamily.id
<core.captioning.families.base.ModelFamily.id>`, e.g. ``blip-2``).  Versions saved
before the ids were unified spell two of them differently (``blip2``,
``vision_encoder_decoder``); every read here normalises them
(:func:`core.captioning.families.canonical_family_id`), so callers see one spelling.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm.attributes import set_committed_value

from core import ownership
from core.captioning.families import canonical_family_id
from core.errors import UserFacingError
from core.kinds import CAPTION
from core.models import LibrarySetting, ModelVersion

if TYPE_CHECKING:
    from core.library import Library

__all__ = [
    "VersionError",
    "VersionInUseError",
    "delete_version",
    "dependants",
    "discard_run",
    "export_merged",
    "get_active_restyler",
    "get_active_version",
    "is_restyler",
    "get_version",
    "list_versions",
    "models_dir",
    "rename_version",
    "run_dir",
    "save_version",
    "set_active",
    "validate_name",
    "version_kind",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")


class VersionError(UserFacingError):
    """A version operation that cannot be done (the message says why)."""


class VersionInUseError(VersionError):
    """Deleting a version that other versions are built on (``dependants`` names them)."""

    def __init__(self, message: str, dependants: list[str]) -> None:
        super().__init__(message)
        self.dependants = dependants


#: Owner-marker job names of the folders this module makes.
SAVE_JOB = "save-version"
EXPORT_JOB = "models-export"


def models_dir(library: Library) -> Path:
    """Where *library*'s versions and training runs live (:attr:`Library.models_dir <core.library.Library.models_dir>`)."""
    return library.models_dir


def run_dir(library: Library, name: str) -> Path:
    """Where an unfinished training run keeps its resumable state."""
    return models_dir(library) / f"{name}.run"


def discard_run(library: Library, name: str) -> bool:
    """Remove the run folder of *name* (the user asked to start over: ``train --restart``); whether one existed."""
    validate_name(name)
    folder = run_dir(library, name)
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
        return True
    if not folder.exists():
        return False
    shutil.rmtree(folder)
    return True


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


def version_kind(version: ModelVersion) -> str:
    """The caption kind *version* learnt (``caption`` for versions older than kinds)."""
    return str((version.config or {}).get("kind") or CAPTION)


def get_active_version(library: Library, kind: str = CAPTION) -> ModelVersion | None:
    """The active version of *kind* (None: none is active for it)."""
    with library.db.read() as session:
        rows = session.scalars(select(ModelVersion).where(ModelVersion.is_active.is_(True)).order_by(ModelVersion.id))
        return next((_normalised(v) for v in rows if version_kind(v) == kind), None)


#: The ``library_settings`` key naming the active restyler version (captioners use ``is_active``).
ACTIVE_RESTYLER_KEY = "active_restyler"


def is_restyler(version: ModelVersion) -> bool:
    """Whether *version* is a trained restyler (``train --restyler``), not a captioner."""
    return isinstance(version.config, dict) and version.config.get("target") == "restyler"


def get_active_restyler(library: Library) -> ModelVersion | None:
    """The restyler version ``restyle`` uses without ``--with`` (None: none activated, or deleted since)."""
    with library.db.read() as session:
        setting = session.get(LibrarySetting, ACTIVE_RESTYLER_KEY)
        name = setting.value if setting is not None else None
    return get_version(library, name) if name else None


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
    if ownership.abandoned(tmp, SAVE_JOB):
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        ownership.make_owned_dir(tmp, SAVE_JOB)
    except FileExistsError:
        raise VersionError(f"{tmp} is in the way (another save of '{name}' running, or not CaptionDesk's); "
                           "move it away and train again") from None
    try:
        model.save_pretrained(tmp)
        if method not in ("lora", "qlora"):
            _save_processor(captioner, tmp)
        ownership.unmark(tmp)
        tmp.replace(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
        session.execute(update(LibrarySetting).where(LibrarySetting.key == ACTIVE_RESTYLER_KEY,
                                                     LibrarySetting.value == old).values(value=new))


def _own_folder(version: ModelVersion) -> str | None:
    """The folder that is this version's own: the adapter of a LoRA version, the model of a full one."""
    return version.adapter_path if version.adapter_path is not None else version.base_model


def _same_folder(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except (OSError, RuntimeError):
        return a == b


def dependants(library: Library, name: str) -> list[str]:
    """Names of the versions built on version *name* (LoRA versions whose base model is its folder)."""
    version = _require(library, name)
    if version.adapter_path is not None:
        return []  # an adapter is nobody's base
    return [v.name for v in list_versions(library)
            if v.id != version.id and v.adapter_path is not None and _same_folder(v.base_model, version.base_model)]


def delete_version(library: Library, name: str, *, delete_files: bool = True, with_dependants: bool = False) -> list[str]:
    """Forget version *name* and remove its own folder (when it lies in the library's models folder).

    A version that others are built on is refused (:class:`VersionInUseError`, naming them)
    unless *with_dependants*, which deletes those first.  No other version's folder is ever
    removed.  Returns the names deleted, *name* last.
    """
    version = _require(library, name)
    needing = dependants(library, name)
    if needing and not with_dependants:
        listed = ", ".join(f"'{n}'" for n in needing)
        raise VersionInUseError(
            f"'{name}' is the base model of {listed}; delete {'it' if len(needing) == 1 else 'them'} first, "
            "or delete them together (models delete --with-dependants)", needing)
    deleted = [d for dependant in needing for d in delete_version(library, dependant, delete_files=delete_files)]
    with library.db.write() as session:
        row = session.get(ModelVersion, version.id)
        if row is not None:
            session.delete(row)
    deleted.append(name)
    own = _own_folder(version)
    if delete_files and own and Path(own).is_dir() and not Path(own).is_symlink():
        parent = models_dir(library).resolve()
        shared = any(_same_folder(own, path) for v in list_versions(library) for path in (v.base_model, v.adapter_path))
        if Path(own).resolve().is_relative_to(parent) and Path(own).resolve() != parent and not shared:
            shutil.rmtree(own, ignore_errors=True)
    return deleted


def set_active(library: Library, name: str | None, kind: str = CAPTION) -> None:
    """Make *name* the active version of the kind it learnt (the default model for that kind);
    None clears the active version of *kind*.

    A restyler version becomes the active *restyler* instead; the active captioners stay.
    """
    target = _require(library, name) if name is not None else None
    if target is not None and is_restyler(target):
        with library.db.write() as session:
            session.merge(LibrarySetting(key=ACTIVE_RESTYLER_KEY, value=target.name))
        return
    kind = version_kind(target) if target is not None else kind
    with library.db.write() as session:
        same_kind = [v.id for v in session.scalars(select(ModelVersion).where(ModelVersion.is_active.is_(True)))
                     if version_kind(v) == kind]
        if same_kind:
            session.execute(update(ModelVersion).where(ModelVersion.id.in_(same_kind)).values(is_active=False))
        if target is not None:
            session.execute(update(ModelVersion).where(ModelVersion.id == target.id).values(is_active=True))


def export_merged(library: Library, name: str, out: Path | str, *, device: str = "cpu") -> Path:
    """Write version *name* as a standalone model folder that plain transformers loads.

    LoRA versions are merged into the base weights (``merge_and_unload``); the processor
    is saved beside the weights; a full version's folder is copied.  *out* must not exist
    yet (or be an empty folder) and lie outside the library's own folders.  Everything is written into a hidden, owner-marked
    ``.OUT.partial-*`` folder beside *out* and renamed into place when complete, so a
    killed export leaves nothing at *out* and its rerun removes that folder and finishes.
    """
    version = _require(library, name)
    out = Path(out).expanduser()
    own = library.own_folder_holding(out)
    if own is not None:
        raise VersionError(f"{out} is inside the library's own folder {own}, where CaptionDesk deletes "
                           "what it no longer needs; choose a folder outside it")
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise VersionError(f"{out} already exists and is not an empty folder")
    ownership.remove_abandoned(out.parent, (f".{out.name}.partial-*",), EXPORT_JOB)
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:12]}"
    try:
        ownership.make_owned_dir(tmp, EXPORT_JOB)
    except OSError as exc:
        raise VersionError(f"cannot create {out}: {exc.strerror or exc}") from None
    try:
        if version.adapter_path is None:
            _copy_model(Path(version.base_model), tmp)
        elif is_restyler(version):
            from core.restyle.model import load_causal_lm

            model, tokenizer, _device = load_causal_lm(version.base_model, version.adapter_path, device=device,
                                                       dtype=_float32())
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        else:
            from core.captioning import load_captioner

            # load_captioner applies the adapter with merge_and_unload (see registry._apply_adapter).
            captioner = load_captioner(version.base_model, adapter=version.adapter_path, device=device,
                                       optimize="none")
            try:
                captioner.model.save_pretrained(tmp)
                _save_processor(captioner, tmp)
            finally:
                captioner.close()
        ownership.unmark(tmp)
        if out.exists():
            out.rmdir()  # empty (checked above); rename cannot replace a folder on Windows
        tmp.replace(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _float32() -> Any:
    import torch

    return torch.float32


def _copy_model(source: Path, target: Path) -> None:
    """Copy a full version's files into the (existing, marked) *target* folder."""
    if not source.is_dir():
        raise VersionError(f"the files of this version are missing ({source})")
    from core.captioning.openvino_runtime import CACHE_DIR_NAME

    for item in source.iterdir():
        # The OpenVINO conversion cache is keyed by the source folder: the copy converts anew.
        if item.name in (ownership.MARKER_NAME, CACHE_DIR_NAME):
            continue
        if item.is_dir() and not item.is_symlink():
            shutil.copytree(item, target / item.name)
        else:
            shutil.copy2(item, target / item.name)
