"""The provenance record stored with each caption row: how its text came to be.

:class:`Provenance` is what ``captions.provenance`` holds (a JSON column, called
``settings`` before migration 0007).  The JSON layout is the one rows have always had —
a flat object whose known keys are the dataclass's fields and whose other keys (an
import's file details, a runner name, …) stay in :attr:`Provenance.extra` — so rows
written by any earlier release read back unchanged and SQL can keep using
``json_extract(provenance, '$.key')``.  The oldest rows kept generation settings at the
top level (``{"num_beams": 3}``); :meth:`Provenance.from_json` moves those into
:attr:`Provenance.generation`.

Nothing here touches the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

#: Generation settings the first releases stored at the top level of the record.
_LEGACY_GENERATION_KEYS = frozenset({"num_beams", "max_new_tokens", "min_new_tokens", "repetition_penalty",
                                     "length_penalty", "do_sample", "temperature", "top_p"})


@dataclass(frozen=True)
class BulkReplace:
    """A bulk find-and-replace that wrote the row."""

    find: str
    replace: str


@dataclass(frozen=True)
class Provenance:
    """How a caption row's text came to be (every field optional; see the module docstring).

    Attributes:
        generation: The generation settings a model was run with (with its prompt).
        identity: What ran: family, device, dtype, optimizations, runtime, endpoint.
        preset, prompt_template, prompt: The preset or template asked for, and the
            prompt this image got.
        score_kind, scores: Which score ``captions.score`` holds, and every score computed.
        bulk_replace: The find-and-replace that wrote the row.
        format, matched_by: For imports: the dataset format, and how the photo was found.
        length_check: ``note`` / ``warning`` when the value is longer than its kind advises.
        extra: Every other key, kept as written.
    """

    generation: Mapping[str, Any] | None = None
    identity: Mapping[str, Any] | None = None
    preset: str | None = None
    prompt_template: str | None = None
    prompt: str | None = None
    score_kind: str | None = None
    scores: Mapping[str, float] | None = None
    bulk_replace: BulkReplace | None = None
    format: str | None = None
    matched_by: str | None = None
    length_check: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Provenance:
        """The record a stored JSON object means (None or ``{}``: an empty record)."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)} - {"extra"}
        values: dict[str, Any] = {k: data.pop(k) for k in list(data) if k in known}
        bulk = values.get("bulk_replace")
        if isinstance(bulk, Mapping):
            values["bulk_replace"] = BulkReplace(str(bulk.get("find", "")), str(bulk.get("replace", "")))
        elif bulk is not None:
            values["bulk_replace"] = None
        if values.get("generation") is None:
            legacy = {k: data.pop(k) for k in list(data) if k in _LEGACY_GENERATION_KEYS}
            if legacy:
                values["generation"] = legacy
        return cls(**values, extra=data)

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored (fields left at None are left out)."""
        out: dict[str, Any] = dict(self.extra)
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, BulkReplace):
                value = {"find": value.find, "replace": value.replace}
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out

    def get(self, key: str, default: Any = None) -> Any:
        """One key of the stored object, field or extra (for generic readers such as SQL mirrors)."""
        value = self.to_json().get(key)
        return default if value is None else value

    def with_(self, **changes: Any) -> Provenance:
        return replace(self, **changes)


def as_provenance(value: Provenance | Mapping[str, Any] | None) -> Provenance | None:
    """*value* as a record: writers may pass a plain mapping (e.g. built by a job)."""
    if value is None or isinstance(value, Provenance):
        return value
    return Provenance.from_json(value)
