"""The model families, one file each, and the registry that finds them.

Each module here defines one :class:`~.base.ModelFamily` subclass (loader,
captioner class, CPU fast paths, training batches, loss, LoRA targets, vision
tower) and an instance named ``FAMILY``.  :data:`FAMILIES` maps each family's one
canonical id to that instance.  Adding a family means adding its file, its tests
and its module name to :data:`_FAMILY_MODULES`.

Stored data written before the ids were unified spells two of them differently
(``blip2``, ``vision_encoder_decoder``); :func:`canonical_family_id` maps those
through :data:`LEGACY_FAMILY_IDS`, the only alias table.

Importing this package is cheap: the family modules import transformers and torch
only inside their methods.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .base import ModelFamily, TrainingNotSupportedError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "FAMILIES",
    "GENERIC_FAMILY_ID",
    "LEGACY_FAMILY_IDS",
    "ModelFamily",
    "TrainingNotSupportedError",
    "canonical_family_id",
    "family_for_model_type",
    "get_family",
    "trainable_family_ids",
]

#: Modules in this package that define a ``FAMILY``; the generic fallback comes last.
_FAMILY_MODULES = ("blip", "blip2", "git", "vision_encoder_decoder", "florence2", "llava", "qwen2_vl", "idefics3",
                   "paligemma", "generic")

#: Id of the fallback family for any other ``AutoModelForImageTextToText`` model.
GENERIC_FAMILY_ID = "generic"

#: Old spellings found in stored versions and job records -> the canonical id.
LEGACY_FAMILY_IDS: dict[str, str] = {
    "blip2": "blip-2",
    "vision_encoder_decoder": "vision-encoder-decoder",
}


def _load_families() -> dict[str, ModelFamily]:
    families: dict[str, ModelFamily] = {}
    for name in _FAMILY_MODULES:
        family: ModelFamily = importlib.import_module(f"{__name__}.{name}").FAMILY
        if family.id in families or family.id in LEGACY_FAMILY_IDS:
            raise RuntimeError(f"model family id {family.id!r} is defined twice")
        families[family.id] = family
    return families


#: Canonical id -> family object.
FAMILIES: dict[str, ModelFamily] = _load_families()

_BY_MODEL_TYPE: dict[str, ModelFamily] = {t: f for f in FAMILIES.values() for t in f.model_types}


def canonical_family_id(family_id: str) -> str:
    """The one spelling of ``family_id`` (legacy spellings accepted; unknown ids returned unchanged)."""
    return LEGACY_FAMILY_IDS.get(family_id, family_id)


def get_family(family_id: str) -> ModelFamily:
    """The family object for an id in any spelling.

    Raises:
        KeyError: no such family.
    """
    try:
        return FAMILIES[canonical_family_id(family_id)]
    except KeyError:
        raise KeyError(f"unknown model family {family_id!r}; known: {', '.join(FAMILIES)}") from None


def family_for_model_type(model_type: str | None) -> ModelFamily | None:
    """The dedicated family for a ``config.model_type``, or None (generic or unsupported)."""
    return _BY_MODEL_TYPE.get(model_type or "")


def trainable_family_ids(families: Iterable[ModelFamily] | None = None) -> list[str]:
    """Ids of the families :func:`core.training.train` can train, in registry order."""
    return [f.id for f in (families if families is not None else FAMILIES.values()) if f.trainable]
