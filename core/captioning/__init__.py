"""The captioning model layer: load a local Hugging Face image-to-text model and caption PIL images.

Typical use::

    from core.captioning import DEFAULT_MODEL, GenerationSettings, load_captioner

    captioner = load_captioner(DEFAULT_MODEL, progress=print)
    settings = GenerationSettings(max_new_tokens=30)
    batch = captioner.preprocess(images, settings)      # CPU only, any thread
    results = captioner.generate(batch, settings)      # [CaptionResult(text, score), ...]

Everything is exported lazily (PEP 562 ``__getattr__``): importing this
package imports neither torch nor transformers; they are loaded when a model
is loaded or a device is resolved.  No Qt anywhere in ``core``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .captioner import Captioner, CaptionResult
    from .device import resolve_device
    from .errors import GenerationError, ModelLoadError
    from .families import ModelFamily, canonical_family_id, get_family
    from .job_spec import DEFAULT_MODEL, GenerationSettings
    from .registry import load_captioner

__all__ = [
    "DEFAULT_MODEL",
    "CaptionResult",
    "Captioner",
    "GenerationError",
    "GenerationSettings",
    "ModelFamily",
    "ModelLoadError",
    "canonical_family_id",
    "get_family",
    "load_captioner",
    "resolve_device",
]

# name -> submodule that defines it.  None of these submodules imports torch
# at module level (the family modules import transformers only inside methods).
_EXPORTS: dict[str, str] = {
    "DEFAULT_MODEL": ".job_spec",
    "GenerationSettings": ".job_spec",
    "CaptionResult": ".captioner",
    "Captioner": ".captioner",
    "load_captioner": ".registry",
    "ModelLoadError": ".errors",
    "GenerationError": ".errors",
    "ModelFamily": ".families",
    "canonical_family_id": ".families",
    "get_family": ".families",
    "resolve_device": ".device",
}


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name, __name__), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
