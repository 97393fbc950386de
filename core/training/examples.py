"""The run's examples as the loop consumes them: images read, captions encoded with the
plan's prompts (:mod:`core.captioning.prompting`), validation and test batches built the
way captioning batches them, and the frozen vision tower's output cached once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.captioning.families import ModelFamily, TrainingNotSupportedError
from core.jobs import CancelToken
from core.queries import outdated_phrase

from .config import TrainingConfig
from .data import TrainingData, TrainingExample
from .result import Report, TrainingError, TrainingResult

if TYPE_CHECKING:
    from .model_setup import _PreparedModel

    pass

# --------------------------------------------------------------------------- data


@dataclass
class _Examples:
    """The run's examples as the loop consumes them."""

    size: int
    text: dict[str, Any]  # caption token tensors, row i = training example i
    images: list[Any]  # training images (emptied when their vision embeddings are cached)
    embeds: Any | None  # the frozen-vision cache (tensor or per-example entries, row i = example i), or None
    val_batches: list[tuple[Any, Any]]  # (preprocessed batch, its GenerationSettings), as for captioning
    refs: list[str]  # validation captions, in val_batches' order
    plan: Any = None  # the PromptPlan (preset / template) the run trains for
    test_batches: list[tuple[Any, Any]] = field(default_factory=list)  # the test split, scored by base and best only
    test_refs: list[str] = field(default_factory=list)
    #: The validation and test photos' files, in refs' and test_refs' order (for CLIPScore).
    paths: list[str] = field(default_factory=list)
    test_paths: list[str] = field(default_factory=list)
    #: The validation photos' measurements (core.captioning.calibration.photo_features), in refs' order.
    val_photo_features: list[tuple[float, ...]] = field(default_factory=list)


def _prepare_examples(captioner: Any, family: ModelFamily, model: _PreparedModel, config: TrainingConfig,
                      data: TrainingData, result: TrainingResult, report: Report, cancel: CancelToken) -> _Examples:
    report(0, None, "Reading images")
    if data.outdated:
        result.skipped_images.append(outdated_phrase(data.outdated))
    train_ex, train_images = _load_images(captioner, data.train, result.skipped_images)
    val_ex, val_images = _load_images(captioner, data.validation, result.skipped_images)
    test_ex, test_images = _load_images(captioner, data.test, result.skipped_images)
    if not train_ex or not val_ex:
        raise TrainingError("none of the captioned images could be read: " + "; ".join(result.skipped_images[:3]))
    result.train_size, result.validation_size, result.test_size = len(train_ex), len(val_ex), len(test_ex)
    from core.captioning.prompting import render_prompts

    plan = _prompt_plan(captioner, family, config)
    train_prompts = render_prompts(plan, [e.path for e in train_ex])
    try:
        if plan.template is None:
            text = family.encode_training_batch(captioner, [e.caption for e in train_ex], config.max_length)
        else:
            text = family.encode_training_batch(captioner, [e.caption for e in train_ex], config.max_length,
                                                prompts=train_prompts)
    except TrainingNotSupportedError as exc:
        raise TrainingError(str(exc)) from exc
    except TypeError as exc:
        if "prompts" not in str(exc):
            raise
        raise TrainingError(f"training the {family.id} family with a preset or prompt template is not supported "
                            "yet (BLIP and the prompted vision-language families are); train without "
                            "--preset/--prompt") from exc
    val_batches, refs, paths, val_features = _validation_batches(captioner, config, plan, val_ex, val_images,
                                                                 measure=True)
    test_batches, test_refs, test_paths, _ = _validation_batches(captioner, config, plan, test_ex, test_images)
    embeds = None
    if family.supports_vision_cache and model.vision_frozen and config.cache_vision != "no":
        report(0, None, "Encoding training images (once)")
        embeds = _encode_vision_once(captioner, family, model.inner, model.vision, train_images, text, config,
                                     cancel)
        if embeds is not None:
            train_images = []  # the pixels are no longer needed
    result.cached_vision = embeds is not None
    return _Examples(len(train_ex), text, train_images, embeds, val_batches, refs, plan, test_batches, test_refs,
                     paths, test_paths, val_features)


def _prompt_plan(captioner: Any, family: ModelFamily, config: TrainingConfig) -> Any:
    from core.captioning.presets import UnsupportedPresetError
    from core.captioning.prompting import plan_prompt

    try:
        return plan_prompt(family, preset=config.preset, template=config.prompt_template,
                           model_type=getattr(captioner, "model_type", None))
    except UnsupportedPresetError as exc:
        raise TrainingError(str(exc)) from exc


def _validation_batches(captioner: Any, config: TrainingConfig, plan: Any, examples: list[TrainingExample],
                        images: list[Any], *, measure: bool = False,
                        ) -> tuple[list[tuple[Any, Any]], list[str], list[str], list[tuple[float, ...]]]:
    """Validation batches of one prompt each (a prompt is baked into a batch), their references,
    files and, with *measure*, photo measurements (the validation split's, for the version's error model)."""
    from core.captioning.calibration import photo_features
    from core.captioning.prompting import prompt_batches, render_prompts

    prompts = render_prompts(plan, [ex.path for ex in examples])
    batches, refs, paths, features = [], [], [], []
    for batch_settings, chunk in prompt_batches(range(len(examples)), prompts, config.batch_size,
                                                _eval_settings(config)):
        batches.append((captioner.preprocess([images[i] for i in chunk], batch_settings), batch_settings))
        refs.extend(examples[i].caption for i in chunk)
        paths.extend(examples[i].path for i in chunk)
        if measure:
            features.extend(photo_features(images[i]) for i in chunk)
    return batches, refs, paths, features


def _eval_settings(config: TrainingConfig) -> Any:
    from core.captioning.job_spec import GenerationSettings

    return GenerationSettings(max_new_tokens=config.max_new_tokens)


def _encode_vision_once(captioner: Any, family: ModelFamily, model: Any, vision: Any, images: list[Any],
                        text: dict[str, Any], config: TrainingConfig, cancel: CancelToken) -> Any | None:
    """The frozen vision side's output for every training example (the family's
    :meth:`~core.captioning.families.base.ModelFamily.vision_cache_entries`: a tensor, or a list
    of per-example entries), or None (the family declines, too big, or cancelled)."""
    import torch

    vision.eval()
    parts: list[Any] = []
    with torch.no_grad():
        for i in range(0, len(images), config.batch_size):
            rows = {key: value[i : i + config.batch_size] for key, value in text.items()}
            part = family.vision_cache_entries(captioner, model, vision, images[i : i + config.batch_size], rows)
            if part is None:
                return None
            parts.append(part)
            if i == 0 and config.cache_vision == "auto":
                size_mb = _nbytes(part) / len(part) * len(images) / 2**20
                if size_mb > config.cache_limit_mb:
                    return None  # too big to keep: run the encoder every step instead
            if cancel.is_set():
                return None
    if not parts:
        return None
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    return type(parts[0])(entry for part in parts for entry in part)  # per-example entries, in example order


def _nbytes(value: Any) -> int:
    """Bytes held by the tensors in ``value`` (a tensor, or lists/tuples/dicts of them)."""
    if hasattr(value, "element_size") and hasattr(value, "numel"):
        return value.element_size() * value.numel()
    if isinstance(value, Mapping):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0


def _load_images(captioner: Any, examples: list[TrainingExample],
                 skipped: list[str]) -> tuple[list[TrainingExample], list[Any]]:
    """The examples' photos decoded exactly as the caption engine decodes them for this model."""
    from core.captioning.captioner import load_model_image
    from core.imaging import ImageDecodeError

    kept, images = [], []
    for ex in examples:
        try:
            images.append(load_model_image(captioner, ex.path))
            kept.append(ex)
        except ImageDecodeError as exc:
            skipped.append(f"{ex.path}: {exc}")
    return kept, images
