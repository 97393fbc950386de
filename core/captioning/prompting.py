"""Prompted captioning, in one place: plan a caption job's prompt, render it per image,
group images by prompt.

A :class:`PromptPlan` is a preset or template (:mod:`core.captioning.presets`) resolved
for one model family.  Every runner goes through the same three steps:

* :func:`plan_prompt` / :func:`plan_for_captioner` resolve what was asked, falling back
  to the preset or template a trained version recorded (a version trained with a prompt
  captions with it) when the request names none;
* :func:`render_prompts` renders each image's prompt from variables fetched in bulk
  beforehand (metadata read from the files, current captions from one query by the
  caller): rendering never touches the database;
* :func:`prompt_batches` groups images that share one prompt (a prompt is baked into a
  batch's token ids) into batches with their generation settings.

Used by the caption engine and its Ray driver (:mod:`core.captioning.engine`,
:mod:`core.captioning.ray_backend`), training and evaluation (:mod:`core.training`).
The preset, the template and the rendered prompt are stored in each caption's
provenance (:meth:`PromptPlan.provenance`).  Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, TypeVar

from core.kinds import CAPTION, CaptionKind, KindError

from .presets import (
    METADATA_VARIABLES,
    PRESETS,
    PresetFollower,
    UnsupportedPresetError,
    fit_to_length,
    template_variables,
)

if TYPE_CHECKING:
    from .job_spec import GenerationSettings

__all__ = [
    "NO_PROMPT",
    "ImageVariables",
    "PromptPlan",
    "UnsupportedKindError",
    "check_family_writes_kind",
    "check_trained_kind",
    "kind_request",
    "plan_for_kind",
    "plan_for_captioner",
    "plan_prompt",
    "prompt_batches",
    "read_metadata_variables",
    "render_prompts",
    "stored_prompt",
]

T = TypeVar("T")


@dataclass(frozen=True)
class ImageVariables:
    """The values of :data:`~core.captioning.presets.VARIABLES` for one image (fetched in bulk by the caller)."""

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
    #: The caption kind the run writes (core.kinds); :func:`plan_for_kind` sets it.
    kind: str = CAPTION

    @classmethod
    def for_family(cls, family: PresetFollower, *, preset: str | None, template: str | None,
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


#: No preset and no template: every image gets the family's default prompt.
NO_PROMPT = PromptPlan(None, None, "", frozenset())


def stored_prompt(config: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """``(preset, prompt_template)`` recorded in a model version's config."""
    config = config or {}
    return config.get("preset"), config.get("prompt_template")


def plan_prompt(family: PresetFollower | None, *, preset: str | None, template: str | None,
                model_type: str | None = None, trained: tuple[str | None, str | None] = (None, None),
                explicit_prompt: bool = False) -> PromptPlan:
    """The plan for *family*: *preset* / *template*, else (unless the request already sets
    a raw prompt, *explicit_prompt*) the ``(preset, template)`` a trained version recorded.

    No preset and no template gives :data:`NO_PROMPT` without a family (a driver or test
    double that has none); ``UnsupportedPresetError`` (a ``ValueError``) when the family
    cannot follow the preset.
    """
    if preset is None and template is None and not explicit_prompt:
        preset, template = trained
    if preset is None and template is None and family is None:
        return NO_PROMPT
    if family is None:
        raise ValueError("a preset or prompt template needs the model's family")
    return PromptPlan.for_family(family, preset=preset, template=template, model_type=model_type)


def plan_for_captioner(captioner: Any, *, preset: str | None, template: str | None,
                       trained: tuple[str | None, str | None] = (None, None),
                       explicit_prompt: bool = False) -> PromptPlan:
    """:func:`plan_prompt` for a loaded captioner (its family and ``model_type``)."""
    return plan_prompt(getattr(captioner, "family", None), preset=preset, template=template,
                       model_type=getattr(captioner, "model_type", None), trained=trained,
                       explicit_prompt=explicit_prompt)


def render_prompts(plan: PromptPlan, paths: Sequence[str],
                   current_captions: Sequence[str | None] | None = None) -> list[str | None]:
    """Each image's rendered prompt, in order; *current_captions* (aligned with *paths*,
    fetched by the caller in bulk) when the plan uses ``{current_caption}``."""
    if plan.template is None or not plan.variables:
        return [plan.render()] * len(paths)
    prompts: list[str | None] = []
    for i, path in enumerate(paths):
        keywords, description = read_metadata_variables(path) if plan.needs_metadata else ((), None)
        current = current_captions[i] if current_captions is not None else None
        prompts.append(plan.render(ImageVariables(path, current, keywords, description)))
    return prompts


def prompt_batches(items: Sequence[T], prompts: Sequence[str | None], batch_size: int,
                   settings: GenerationSettings) -> list[tuple[GenerationSettings, list[T]]]:
    """Batches of *items* that share one prompt (*prompts* aligned with *items*), in the
    items' order within each prompt; each with its settings (the prompt set in them)."""
    if len(items) != len(prompts):
        raise ValueError(f"{len(items)} items but {len(prompts)} prompts")
    groups: dict[str | None, list[T]] = {}
    for item, prompt in zip(items, prompts, strict=True):
        groups.setdefault(prompt, []).append(item)
    batches = []
    for prompt, grouped in groups.items():
        batch_settings = settings if prompt is None else replace(settings, prompt=prompt)
        batches.extend((batch_settings, grouped[i : i + batch_size]) for i in range(0, len(grouped), batch_size))
    return batches


# -- caption kinds (core.kinds) ------------------------------------------------------------


class UnsupportedKindError(KindError):
    """The model cannot be asked for this kind (the message names the families that can)."""


def kind_request(kind: CaptionKind, preset: str | None, template: str | None) -> tuple[str | None, str | None]:
    """``(preset, template)`` a run writing *kind* asks with: the ones given, else the
    kind's default preset or (a user kind) its own prompt.  The ``caption`` kind keeps
    the request as it is (a trained version's prompt may still apply)."""
    if kind.name == CAPTION or preset is not None or template is not None:
        return preset, template
    if kind.preset is not None:
        return kind.preset, None
    if kind.prompt:
        return None, kind.prompt  # a template: it may use the per-image variables
    raise KindError(f"the kind {kind.label!r} has no prompt of its own: give one with --prompt (or a --preset)")


def _asks_for(family: PresetFollower, kind: CaptionKind, preset: str | None, template: str | None,
              model_type: str | None = None) -> bool:
    """Whether *family* can be asked for *kind* with this request: a prompt that is an
    instruction, or a preset it maps to a task of its own (not an unconditional caption)."""
    if preset is None:
        # A prefix is continued, not followed: it cannot ask for alt text.
        return template is not None and getattr(family, "prompt_style", None) == "instruction"
    try:
        return family.preset_prompt(PRESETS[preset], model_type=model_type) is not None
    except UnsupportedPresetError:
        return False


def check_family_writes_kind(family: PresetFollower | None, kind: CaptionKind, preset: str | None,
                             template: str | None, model_type: str | None = None) -> None:
    """:class:`UnsupportedKindError` unless *family* can write *kind* (every family writes
    ``caption``); the message names the families that can."""
    if kind.name == CAPTION or (family is not None and _asks_for(family, kind, preset, template, model_type)):
        return
    from .families import FAMILIES

    able = sorted({f.id for f in FAMILIES.values() if _asks_for(f, kind, preset, template)})
    who = f"the {family.id} family" if family is not None else "this model"
    raise UnsupportedKindError(
        f"{who} writes only captions (caption kind 'caption'): it continues a text, it cannot be asked "
        f"for {kind.label.lower()}; families that can: {', '.join(able)}, or a model server (--backend openai)")


def check_trained_kind(kind: CaptionKind, trained_kind: str | None, version: str = "this version") -> None:
    """:class:`UnsupportedKindError` when a version trained on another kind than ``caption``
    is asked to write *kind*: it learnt to write its own kind, whatever it is asked."""
    if trained_kind is not None and trained_kind not in (CAPTION, kind.name):
        raise UnsupportedKindError(f"{version} was trained to write {trained_kind}, not {kind.label.lower()}: "
                                   f"caption with it using --kind {trained_kind}, or choose another model")


def plan_for_kind(family: PresetFollower | None, kind: CaptionKind, *, preset: str | None, template: str | None,
                  model_type: str | None = None, trained: tuple[str | None, str | None] = (None, None),
                  explicit_prompt: bool = False, trained_kind: str | None = None) -> PromptPlan:
    """:func:`plan_prompt` for a run writing *kind*: its default prompt when none is given,
    never a trained version's caption prompt for another kind, and
    :class:`UnsupportedKindError` for a family that cannot be asked for it.

    *trained_kind*: the kind the version learnt.  A version trained on *kind* writes it
    with the prompt it was trained on (none, for a family that continues a text: it learnt
    to write the kind unprompted); one trained on another kind is refused.
    """
    check_trained_kind(kind, trained_kind)
    if kind.name == CAPTION or trained_kind == kind.name:
        plan = plan_prompt(family, preset=preset, template=template, model_type=model_type, trained=trained,
                           explicit_prompt=explicit_prompt)
        return plan if kind.name == CAPTION else replace(plan, kind=kind.name, max_chars=None)
    if not explicit_prompt:
        preset, template = kind_request(kind, preset, template)
    check_family_writes_kind(family, kind, preset, template if not explicit_prompt else "", model_type)
    plan = plan_prompt(family, preset=preset, template=template, model_type=model_type,
                       explicit_prompt=explicit_prompt)
    # Alt text is checked (core.kinds.length_check), not cut: a cut sentence is worse alt text than a long one.
    return replace(plan, kind=kind.name, max_chars=None)
