"""The library's current model: what captioning, evaluation and training start from.

One answer for the CLI and the window (:func:`current_model`): the active model version
if there is one, else the base model this library chose, else
:data:`core.captioning.DEFAULT_MODEL`.  Activating a version (``models activate``,
Versions → Activate) therefore changes what ``caption`` and ``eval`` use without
``--model``, what the Caption dialog pre-selects and what the Train dialog pre-fills;
:func:`use_base_model` goes back to the base model.

Each caption kind (:mod:`core.kinds`) has its own active version (``caption --kind keywords``
without ``--model`` captions with the keywords kind's); a kind without one uses the
``caption`` kind's current model, which a prompted model can be asked for the kind with.

Torch-free: the window's dialogs call it while they open.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from core.captioning import (
    DEFAULT_MODEL,  # torch-free: core.captioning imports torch lazily
)
from core.captioning.registry import (
    _looks_like_path,  # the model loader's own test of a path
)
from core.kinds import CAPTION
from core.models import LibrarySetting

from . import versions

if TYPE_CHECKING:
    from core.library import Library

__all__ = ["CurrentModel", "current_model", "library_base_model", "set_base_model", "use_base_model"]

_BASE_MODEL_KEY = "base_model"

#: Why a model is the current one (``CurrentModel.source``).
SOURCE_VERSION, SOURCE_LIBRARY, SOURCE_DEFAULT = "version", "library", "default"


@dataclass(frozen=True)
class CurrentModel:
    """What to caption with, what to train from, and why."""

    #: What ``--model`` would name: the active version's name, or a hub id / folder.
    model: str
    #: The base model below it: the version's ``trained_from``, or ``model`` itself.
    base_model: str
    #: The active version's name and id (None: a plain base model is current).
    version: str | None = None
    version_id: int | None = None
    #: Training may continue from the version itself (a full fine-tune is a whole model;
    #: a LoRA adapter is not a base to train another adapter on).
    can_continue: bool = False
    #: ``version``, ``library`` (this library's chosen base model) or ``default``.
    source: str = SOURCE_DEFAULT
    #: The caption kind the active version learnt (``caption`` for a base model).
    kind: str = CAPTION

    def describe(self) -> str:
        """One line for people, e.g. "version 'shop-v2' (active), trained from …"."""
        if self.version is not None:
            active = "active" if self.kind == CAPTION else f"active for {self.kind}"
            return f"version '{self.version}' ({active}), trained from {_short(self.base_model)}"
        why = "this library's base model" if self.source == SOURCE_LIBRARY else "the default base model"
        return f"{self.model} ({why})"


def _short(model: str) -> str:
    return Path(model).name if Path(model).is_absolute() else model


def library_base_model(library: Library) -> str | None:
    """The base model this library chose (None: none chosen, the default applies)."""
    with library.db.read() as session:
        value = session.scalar(select(LibrarySetting.value).where(LibrarySetting.key == _BASE_MODEL_KEY))
    return value or None


def set_base_model(library: Library, model: str | None) -> None:
    """Choose the library's base model (None or empty: back to the default).

    A version name is refused: a version is made current with :func:`versions.set_active`.
    A local folder is stored as its absolute path; a path that is not a folder is refused.
    """
    model = (model or "").strip() or None
    if model is not None and versions.get_version(library, model) is not None:
        raise versions.VersionError(f"'{model}' is a trained version: activate it instead "
                                    f"('captiondesk models activate {model}')")
    if model is not None and Path(model).expanduser().is_dir():
        # Stored relative, the base model would change with the folder the next command runs in.
        model = str(Path(model).expanduser().resolve())
    elif model is not None and _looks_like_path(model):
        raise versions.VersionError(f"{model}: no such model folder (give a model folder or a hub id)")
    with library.db.write() as session:
        row = session.get(LibrarySetting, _BASE_MODEL_KEY)
        if model is None:
            if row is not None:
                session.delete(row)
        elif row is None:
            session.add(LibrarySetting(key=_BASE_MODEL_KEY, value=model))
        else:
            row.value = model


def use_base_model(library: Library, model: str | None = None) -> CurrentModel:
    """No version active any more: the library's base model (or *model*, chosen now) captions."""
    if model is not None:
        set_base_model(library, model)
    versions.set_active(library, None)
    return current_model(library)


def current_model(library: Library, kind: str = CAPTION) -> CurrentModel:
    """The active version of *kind*, else (another kind) the ``caption`` kind's current model,
    else the library's chosen base model, else ``DEFAULT_MODEL``."""
    active = versions.get_active_version(library, kind)
    if active is not None:
        base = str((active.config or {}).get("trained_from") or active.base_model)
        return CurrentModel(model=active.name, base_model=base, version=active.name, version_id=active.id,
                            can_continue=active.adapter_path is None, source=SOURCE_VERSION, kind=kind)
    if kind != CAPTION:
        return current_model(library)
    chosen = library_base_model(library)
    if chosen is not None:
        return CurrentModel(model=chosen, base_model=chosen, source=SOURCE_LIBRARY)
    return CurrentModel(model=DEFAULT_MODEL, base_model=DEFAULT_MODEL, source=SOURCE_DEFAULT)
