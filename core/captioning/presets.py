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

Resolving a preset or template for one loaded family, rendering it per image and
grouping images by prompt is :mod:`core.captioning.prompting`'s work.

Nothing here imports torch.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Protocol

from core.errors import UserFacingError

__all__ = [
    "ALT_TEXT_MAX_CHARS",
    "PRESETS",
    "VARIABLES",
    "PresetFollower",
    "Preset",
    "UnsupportedPresetError",
    "fit_to_length",
    "supported_presets",
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
    Preset("keywords", "Keyword list", "List keywords for this image, comma-separated. "
           "Write a hierarchy as broad|narrow (e.g. animals|dogs)."),
    Preset("title", "Title", "Write a short title for this image, at most eight words, without quotes."),
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


class PresetFollower(Protocol):
    """What prompting needs of a model family (:class:`~core.captioning.families.base.ModelFamily`
    is one): its id, and what a preset becomes for it."""

    id: str

    def preset_prompt(self, preset: Preset, *, model_type: str | None = None) -> str | None: ...


def supported_presets(family: PresetFollower, model_type: str | None = None) -> list[str]:
    """The preset ids *family* can follow (for the dialog, the CLI help and error messages)."""
    ok = []
    for preset in PRESETS.values():
        try:
            family.preset_prompt(preset, model_type=model_type)
        except UnsupportedPresetError:
            continue
        ok.append(preset.id)
    return ok

