"""Generation settings for a captioning run.

A :class:`GenerationSettings` is an immutable, validated bundle of the decoding
knobs that change what a model writes.  It is stored next to every caption as
provenance JSON (:meth:`GenerationSettings.to_dict`), so it deliberately holds
only plain, JSON-serialisable values and no torch objects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["GenerationSettings"]


@dataclass(frozen=True, slots=True)
class GenerationSettings:
    """Decoding parameters shared by every model family.

    Attributes:
        num_beams: Beam width; ``1`` is greedy decoding (the fastest on CPU).
        min_new_tokens: Minimum number of tokens to generate before EOS is allowed.
        max_new_tokens: Hard cap on generated tokens (must be ``>= min_new_tokens``).
        prompt: Optional text prompt.  For BLIP/GIT/ViT-GPT2 it is a conditional
            *prefix* the caption continues (e.g. BLIP's ``"a photography of"``);
            for instruction models (Florence-2, SmolVLM, Qwen-VL) it is the
            instruction/task token.  ``None`` means the family default.  The
            returned caption never contains the prompt itself.
        repetition_penalty: ``1.0`` disables it; values ``> 1`` discourage loops.
    """

    num_beams: int = 1
    min_new_tokens: int = 0
    max_new_tokens: int = 30
    prompt: str | None = None
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        # bool is an int subclass; True as a beam count is surely a bug upstream.
        for name in ("num_beams", "min_new_tokens", "max_new_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                # ValueError (not TypeError) on purpose: callers catch one type for bad settings.
                raise ValueError(f"{name} must be an integer, got {value!r}")  # noqa: TRY004
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams!r}")
        if self.min_new_tokens < 0:
            raise ValueError(f"min_new_tokens must be >= 0, got {self.min_new_tokens!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens!r}")
        if self.max_new_tokens < self.min_new_tokens:
            raise ValueError(
                f"max_new_tokens ({self.max_new_tokens!r}) must be >= min_new_tokens ({self.min_new_tokens!r})"
            )
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise ValueError(f"prompt must be a string or None, got {self.prompt!r}")
        penalty = self.repetition_penalty
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not penalty > 0:
            # `not penalty > 0` also rejects NaN.
            raise ValueError(f"repetition_penalty must be a number > 0, got {penalty!r}")
        # Normalise ints to float so to_dict() round-trips to an equal object.
        object.__setattr__(self, "repetition_penalty", float(penalty))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (for the caption's provenance record)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationSettings:
        """Inverse of :meth:`to_dict`.

        Unknown keys raise ``ValueError`` rather than being dropped silently:
        provenance written by a newer version must not be misread as if the
        extra knob had not been used.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown generation setting(s): {', '.join(map(repr, unknown))}")
        return cls(**data)
