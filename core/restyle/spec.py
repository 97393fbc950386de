"""What a restyle run is (:class:`RestyleSpec`) and which restyler a name means.

A restyler is named like a captioner: a trained restyler version of the library (its base
model + adapter, and the style prompt it was trained with), a model folder, a hub id, or
with ``backend="openai"`` a model the server lists.  A captioner version is refused
here: it describes images, it does not rewrite text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import UserFacingError
from core.queries import ImageFilter

from .model import DEFAULT_STYLE, RestyleSettings

if TYPE_CHECKING:
    from core.library import Library

#: The ``ModelVersion.config["target"]`` of a trained restyler (captioner versions have none).
RESTYLER_TARGET = "restyler"
#: The key of a caption's provenance (``Caption.provenance``, an extra key) that records the restyle stage.
RESTYLE_KEY = "restyle"
BACKENDS = ("local", "openai")


class RestyleError(UserFacingError, ValueError):
    """A restyle request that cannot be carried out (the message says why)."""


def is_restyler_config(config: Any) -> bool:
    """Whether a version's ``config`` is a trained restyler's."""
    return isinstance(config, dict) and config.get("target") == RESTYLER_TARGET


@dataclass(frozen=True)
class RestyleSpec:
    """One restyle run: which restyler, the style, and which captions (a scope as captioning's).

    *style* None: the trained version's style prompt, else :data:`~core.restyle.model.DEFAULT_STYLE`.
    """

    restyler: str
    style: str | None = None
    scope: ImageFilter | list[int] | None = None
    backend: str = "local"
    endpoint: str | None = None
    batch_size: int = 8
    device: str = "auto"
    max_new_tokens: int = 60
    max_concurrency: int = 4
    server_timeout: float = 120.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.restyler or not str(self.restyler).strip():
            raise RestyleError("name a restyler: a trained restyler version, a model folder or a hub id")
        if self.backend not in BACKENDS:
            raise RestyleError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "openai":
            from core.captioning.endpoints import normalize_endpoint

            if not self.endpoint:
                raise RestyleError("a server restyler needs an endpoint (--endpoint URL)")
            object.__setattr__(self, "endpoint", normalize_endpoint(self.endpoint))
        if self.style is not None and not self.style.strip():
            raise RestyleError("the style prompt is empty")
        for name in ("batch_size", "max_new_tokens", "max_concurrency"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise RestyleError(f"{name} must be a positive integer, got {value!r}")

    def describe(self) -> dict[str, Any]:
        """The job record's parameters (plain JSON; never an API key)."""
        from core.captioning.engine import describe_scope

        return {"restyler": self.restyler, "style": self.style, "backend": self.backend, "endpoint": self.endpoint,
                "batch_size": self.batch_size, "device": self.device, "max_new_tokens": self.max_new_tokens,
                "scope": describe_scope(self.scope)}


@dataclass(frozen=True)
class ResolvedRestyler:
    """The restyler a spec names, as the provenance records it."""

    model_name: str
    adapter: str | None
    version_id: int | None
    version_name: str | None
    settings: RestyleSettings
    backend: str = "local"
    endpoint: str | None = None

    def provenance(self) -> dict[str, Any]:
        """The restyle stage's keys in a caption's provenance (``settings[RESTYLE_KEY]``)."""
        from core.captioning.endpoints import endpoint_host

        return {"restyler": self.model_name, "adapter": self.adapter, "version": self.version_name,
                "version_id": self.version_id, "style": self.settings.style, "backend": self.backend,
                "endpoint": endpoint_host(self.endpoint) if self.endpoint else None,
                "max_new_tokens": self.settings.max_new_tokens}


def resolve_restyler(library: Library, spec: RestyleSpec) -> ResolvedRestyler:
    """*spec*'s restyler: a version → base + adapter + its style; a folder → its absolute path."""
    from sqlalchemy import select

    from core.models import ModelVersion

    name, adapter, version_id, version_name, trained_style = spec.restyler, None, None, None, None
    if spec.backend == "local":
        with library.db.read() as session:
            version = session.scalar(select(ModelVersion).where(ModelVersion.name == spec.restyler))
        if version is not None:
            if not is_restyler_config(version.config):
                raise RestyleError(f"'{version.name}' is a captioner version; restyle with a restyler version "
                                   "(train one with `train --restyler`), a text model folder or a hub id")
            name, adapter, version_id, version_name = version.base_model, version.adapter_path, version.id, version.name
            trained_style = (version.config or {}).get("style")
        elif os.path.isdir(name):
            name = str(Path(name).resolve())
    style = spec.style or trained_style or DEFAULT_STYLE
    return ResolvedRestyler(name, adapter, version_id, version_name, RestyleSettings(style, spec.max_new_tokens),
                            spec.backend, spec.endpoint)
