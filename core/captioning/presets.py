"""Caption presets and prompt templates: what to ask a model, family-agnostic.

A **preset** names a kind of caption (:data:`PRESETS`): a short caption, a detailed
description, alt text (accessibility, at most :data:`ALT_TEXT_MAX_CHARS` characters), a
keyword list, a text-to-image training prompt, and Florence-2's longest description.
What a preset becomes for one model is the **family's** business, through one hook,
:meth:`ModelFamily.preset_prompt <core.captioning.families.base.ModelFamily.preset_prompt>`:

* instruction-following families (``prompt_style = "instruction"``) send the preset's
  :attr:`Preset.instruction`; a family may map presets to its own task tokens
  (Florence-2: ``<CAPTION>``, ``<DETAILED_CAPTION>``, ``<MORE_DETAILED_CAPTION>``);
* prefix families (BLIP, GIT, ViT-GPT2: ``prompt_style = "prefix"``) can only continue a
  text prefix (conditional captioning), so they support the presets their
  :attr:`~core.captioning.families.base.ModelFamily.preset_prompts` lists (short caption,
  alt text, training prompt: unconditional) and refuse the others with
  :class:`UnsupportedPresetError`, which names the presets they do support.

A **template** is the user's own prompt with per-image variables (:data:`VARIABLES`):
``{folder}``, ``{file_name}``, ``{keywords}`` and ``{description}`` (read from the file's
existing metadata, :mod:`core.metadata`) and ``{current_caption}``.  For a prefix family
the rendered template is the prefix; for an instruction family, the instruction.

:class:`PromptPlan` is a preset or template resolved for one loaded family; the engine
(and the trainer) render it per image from :class:`ImageVariables` that they fetched in
bulk beforehand (rendering never touches the database).  The preset, the template and
the rendered prompt are stored in each caption's provenance (:meth:`PromptPlan.provenance`).

Nothing here imports torch.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from core.errors import UserFacingError

if TYPE_CHECKING:
    from .families.base import ModelFamily

__all__ = [
    "ALT_TEXT_MAX_CHARS",
    "PRESETS",
    "VARIABLES",
    "ImageVariables",
    "Preset",
    "PromptPlan",
    "UnsupportedPresetError",
    "fit_to_length",
    "template_variables",
]

#: Accessibility guidance: screen readers cut alt text around 125 characters.
ALT_TEXT_MAX_CHARS = 125


class UnsupportedPresetError(UserFacingError, ValueError):
    """The model's family cannot follow this preset (the message lists the ones it can)."""


@dataclass(frozen=True)
class Preset:
    """One kind of caption.

    Attributes:
        id: Stable name (CLI ``--preset``, provenance, training config).
        label: As a person reads it (caption dialog).
        instruction: What an instruction-following model is asked.
        max_chars: Captions are cut at a word boundary to at most this many characters.
    """

    id: str
    label: str
    instruction: str
    max_chars: int | None = None


PRESETS: dict[str, Preset] = {p.id: p for p in (
    Preset("short", "Short caption", "Describe this image in one short sentence."),
    Preset("detailed", "Detailed description", "Describe this image in detail."),
    Preset("more_detailed", "Very detailed description",
           "Describe this image in as much detail as possible, including the background."),
    Preset("alt_text", "Alt text (accessibility)",
           f"Write alt text for this image for a screen reader, at most {ALT_TEXT_MAX_CHARS} characters.",
           max_chars=ALT_TEXT_MAX_CHARS),
    Preset("keywords", "Keyword list", "List keywords for this image, comma-separated."),
    Preset("t2i_prompt", "Text-to-image training prompt",
           "Write a text-to-image prompt for this image: subject, style, lighting, composition."),
)}

#: Per-image variables a template may use, and what each is.
VARIABLES: dict[str, str] = {
    "folder": "the image's folder name",
    "file_name": "the image's file name without extension",
    "keywords": "keywords from the file's metadata (XMP dc:subject / IPTC Keywords), comma-separated",
    "description": "the description in the file's metadata (XMP / IPTC / EXIF)",
    "current_caption": "the image's current caption in the library",
}
#: Variables read from the image file's metadata (file I/O, no database).
METADATA_VARIABLES = frozenset({"keywords", "description"})


def template_variables(template: str) -> set[str]:
    """The variables *template* uses; ``ValueError`` for unknown ones or bad braces."""
    try:
        fields = [name for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"bad prompt template {template!r}: {exc} (write {{{{ and }}}} for literal braces)") from None
    unknown = sorted({f for f in fields if f not in VARIABLES})
    if unknown or any(not f for f in fields):
        raise ValueError(f"unknown variable(s) {', '.join('{' + u + '}' for u in unknown) or '{}'} in the prompt "
                         f"template; known: {', '.join('{' + v + '}' for v in VARIABLES)}")
    return set(fields)


def fit_to_length(text: str, max_chars: int | None) -> str:
    """*text* cut at a word boundary to at most *max_chars* characters (None: unchanged)."""
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text[: max_chars + 1].rsplit(" ", 1)[0] if " " in text[: max_chars + 1] else text[:max_chars]
    return cut[:max_chars].rstrip(" ,;:-")


@dataclass(frozen=True)
class ImageVariables:
    """The values of :data:`VARIABLES` for one image (fetched in bulk by the caller)."""

    path: str
    current_caption: str | None = None
    keywords: tuple[str, ...] = ()
    description: str | None = None

    def values(self) -> dict[str, str]:
        p = PurePath(self.path)
        return {"folder": p.parent.name, "file_name": p.stem, "keywords": ", ".join(self.keywords),
                "description": self.description or "", "current_caption": self.current_caption or ""}


def read_metadata_variables(path: str) -> tuple[tuple[str, ...], str | None]:
    """``(keywords, description)`` from *path*'s metadata; empty when unreadable or absent."""
    from core import metadata

    try:
        found = metadata.read_caption(path)
    except metadata.MetadataError:
        found = None
    try:
        keywords = tuple(metadata.read_keywords(path))
    except metadata.MetadataError:
        keywords = ()
    return keywords, (found.text if found else None)


@dataclass(frozen=True)
class PromptPlan:
    """A preset or template resolved for one family: what each image's prompt is.

    Build with :meth:`for_family`; :meth:`render` gives one image's prompt (None: the
    family's unconditional default), :meth:`finish` post-processes a caption (alt text
    length), :meth:`provenance` is what each caption records.
    """

    preset: str | None
    template: str | None
    family: str
    variables: frozenset[str]
    max_chars: int | None = None

    @classmethod
    def for_family(cls, family: ModelFamily, *, preset: str | None, template: str | None,
                   model_type: str | None = None) -> PromptPlan:
        """Resolve *preset* / *template* for *family*; :class:`UnsupportedPresetError` if it cannot."""
        if preset is not None and template is not None:
            raise ValueError("give a preset or a prompt template, not both")
        if preset is not None:
            if preset not in PRESETS:
                raise UnsupportedPresetError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
            text = family.preset_prompt(PRESETS[preset], model_type=model_type)
            return cls(preset, text, family.id, frozenset(template_variables(text) if text else ()),
                       PRESETS[preset].max_chars)
        if template is not None:
            if not template.strip():
                raise ValueError("the prompt template is empty")
            return cls(None, template, family.id, frozenset(template_variables(template)))
        return cls(None, None, family.id, frozenset())

    @property
    def needs_metadata(self) -> bool:
        return bool(self.variables & METADATA_VARIABLES)

    @property
    def needs_current_caption(self) -> bool:
        return "current_caption" in self.variables

    def render(self, image: ImageVariables | None = None) -> str | None:
        """The prompt for one image (None: the family's unconditional default)."""
        if self.template is None:
            return None
        if not self.variables:
            return self.template
        if image is None:
            raise ValueError("this prompt template needs the image's variables")
        return self.template.format(**image.values()).strip() or None

    def finish(self, caption: str) -> str:
        return fit_to_length(caption, self.max_chars)

    def provenance(self, rendered: str | None) -> dict[str, Any]:
        return {"preset": self.preset, "prompt_template": self.template, "prompt": rendered}

    def to_config(self) -> dict[str, str | None]:
        """What a trained version records (``preset``, ``prompt_template``) to reuse when captioning."""
        return {"preset": self.preset, "prompt_template": None if self.preset else self.template}


def supported_presets(family: ModelFamily, model_type: str | None = None) -> list[str]:
    """The preset ids *family* can follow (for the dialog, the CLI help and error messages)."""
    ok = []
    for preset in PRESETS.values():
        try:
            family.preset_prompt(preset, model_type=model_type)
        except UnsupportedPresetError:
            continue
        ok.append(preset.id)
    return ok


def stored_prompt(config: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """``(preset, prompt_template)`` recorded in a model version's config."""
    config = config or {}
    return config.get("preset"), config.get("prompt_template")
