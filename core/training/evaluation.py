"""The evaluation job: caption a validation split with a model and score it.

:func:`evaluate_model` (``captiondesk eval``, the Versions window's Evaluate) scores a
model version on its own held-out split by default, with the preset or template it was
trained with (:mod:`core.captioning.prompting`), and reports any evaluated image that
was a training image, and any held-out one with a near-duplicate in training.  A restyler
version is scored on its held-out (model caption → verified caption) pairs instead, the
restyled text against the person's (:mod:`core.restyle.evaluation`; ``split["held_out"]``
says whether the test or the validation pairs).  The metrics themselves are :mod:`core.training.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.kinds import CAPTION

from .metrics import kind_metrics, metric_intervals

if TYPE_CHECKING:
    from core.library import Library

__all__ = ["EvalResult", "evaluate_model"]


@dataclass
class EvalResult:
    """Metrics of one model on a validation split of the library.

    ``split`` says which split was scored (``val_ratio``, ``seed``, ``include_imports``)
    and where it came from: ``"version"`` (the version's own stored split, the default
    for ``--model NAME``) or ``"asked"``.  ``train_overlap`` holds the evaluated image ids
    that were in the version's *training* data; when there are any, ``warnings`` says so
    and ``held_out_metrics`` are the metrics of the other images alone.
    """

    model: str
    adapter: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    #: ``(image_id, model caption, human caption)`` per validation image.
    predictions: list[tuple[int, str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    split: dict[str, Any] = field(default_factory=dict)
    version: str | None = None
    train_overlap: list[int] = field(default_factory=list)
    held_out_metrics: dict[str, float] | None = None
    warnings: list[str] = field(default_factory=list)
    #: 95 % bootstrap intervals (:func:`~core.training.metrics.metric_intervals`) of ``metrics`` and ``held_out_metrics``.
    intervals: dict[str, list[float]] = field(default_factory=dict)
    held_out_intervals: dict[str, list[float]] | None = None
    #: Held-out evaluated photos with a near-duplicate (same duplicate group, core.duplicates)
    #: among the training photos: the version's own when it has them, else this split's;
    #: None when the library was never searched for duplicates.
    near_duplicates_in_training: int | None = None


def _evaluation_split(
    version: Any, val_ratio: float | None, seed: int | None, include_imports: bool | None,
) -> dict[str, Any]:
    """The split to score: the version's stored one unless a setting is given explicitly."""
    from core.splits import DEFAULT_SEED, DEFAULT_VAL_RATIO

    stored = (version.data_snapshot or {}) if version is not None else {}
    defaults = {
        "val_ratio": stored.get("val_ratio", DEFAULT_VAL_RATIO),
        "seed": stored.get("seed", DEFAULT_SEED),
        "include_imports": bool(stored.get("include_imports", False)),
    }
    asked = {"val_ratio": val_ratio, "seed": seed, "include_imports": include_imports}
    split = {k: defaults[k] if asked[k] is None else asked[k] for k in defaults}
    from_version = bool(stored) and all(split[k] == defaults[k] for k in defaults)
    split["source"] = "version" if from_version else "asked"
    return split


def evaluate_model(
    library: Library,
    model: str,
    adapter: str | None = None,
    *,
    val_ratio: float | None = None,
    seed: int | None = None,
    include_imports: bool | None = None,
    device: str = "auto",
    optimize: str = "none",
    batch_size: int = 8,
    max_new_tokens: int = 30,
    captioner: Any | None = None,
    progress: Any = None,
    cancel: Any = None,
    kind: str | None = None,
) -> EvalResult:
    """Caption a validation split with *model* (hub id, folder or version name) and score it.

    A model version (``model`` = its name) is scored, by default, on **its own** validation
    split: the ``val_ratio``, ``seed`` and ``include_imports`` stored with it when it was
    trained, so it is never scored on its training photos.  Settings given explicitly
    override those (and are the split for hub ids and folders; defaults
    :data:`core.splits.DEFAULT_VAL_RATIO` / ``DEFAULT_SEED``); any evaluated image that was
    in the version's training data is then reported (``train_overlap``, ``warnings``,
    ``held_out_metrics`` without them).  The split is the one training and export use
    (:func:`core.splits.assign_split`).  ``optimize="none"`` by default so the numbers are
    those of the plain fp32 model.  Raises :class:`~core.training.data.InsufficientDataError`
    when the validation split is empty, ``ModelLoadError`` when the model cannot be loaded.
    *kind*: the caption kind whose verified values are the references (None: the kind the
    version was trained on, else ``caption``).
    """
    from core.captioning.captioner import load_model_image
    from core.captioning.job_spec import GenerationSettings
    from core.captioning.registry import resolve_model
    from core.imaging import ImageDecodeError
    from core.jobs import Progress

    from .data import InsufficientDataError, collect_training_data
    from .versions import get_version, version_kind

    model = str(model)  # a Path to a folder is fine too
    version = get_version(library, model)
    if version is not None and version.config and version.config.get("target") == "restyler":
        return _evaluate_restyler(library, version, val_ratio=val_ratio, seed=seed, device=device,
                                  restyler=captioner, progress=progress, cancel=cancel)
    split = _evaluation_split(version, val_ratio, seed, include_imports)
    if kind is None:
        kind = version_kind(version) if version is not None else CAPTION
    data = collect_training_data(library, val_ratio=split["val_ratio"], seed=split["seed"],
                                 include_imports=split["include_imports"], kind=kind)
    if not data.validation:
        raise InsufficientDataError(
            f"there are no verified captions in the validation split ({data.summary()} at validation ratio "
            f"{split['val_ratio']:g}); write or accept more captions, or raise --val-ratio")
    resolved = resolve_model(library, model, adapter)
    result = EvalResult(resolved.model_name, resolved.adapter, split=split,
                        version=version.name if version is not None else None)
    trained_on = _training_images(version)
    owns = captioner is None
    if captioner is None:
        from core.captioning import load_captioner

        captioner = load_captioner(resolved.model_name, adapter=resolved.adapter, device=device, optimize=optimize)
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    plan = _trained_prompt_plan(captioner, resolved)
    examples = data.validation
    overlap: set[int] = set()
    try:
        for start in range(0, len(examples), batch_size):
            if cancel is not None and cancel.is_set():
                break
            chunk, images = [], []
            for ex in examples[start : start + batch_size]:
                try:
                    images.append(load_model_image(captioner, ex.path))  # as captioning decodes
                    chunk.append(ex)
                except ImageDecodeError as exc:
                    result.skipped.append(f"{ex.path}: {exc}")
            if images:
                for ex, text in zip(chunk, _caption_with_prompts(captioner, plan, chunk, images, settings),
                                    strict=True):
                    result.predictions.append((ex.image_id, text, ex.caption))
                    if ex.image_id in trained_on[0] or ex.fingerprint in trained_on[1]:
                        overlap.add(ex.image_id)
            if progress is not None:
                progress(Progress(min(start + batch_size, len(examples)), len(examples), "Evaluating"))
    finally:
        if owns:
            captioner.close()
    from core.duplicates import count_leaks, searched

    if searched(library):
        training_ids = trained_on[0] or {e.image_id for e in data.train}
        held_out_ids = [i for i, _, _ in result.predictions if i not in overlap]
        result.near_duplicates_in_training = count_leaks(library, held_out_ids, sorted(training_ids))
    if result.near_duplicates_in_training:
        result.warnings.append(
            f"{result.near_duplicates_in_training} held-out photos have a near-duplicate in training (it was "
            "trained before `captiondesk duplicates` grouped them); these scores flatter it")
    _score(result, sorted(overlap), kind)
    if overlap:
        n = len(result.predictions)
        held_out = [p for p in result.predictions if p[0] not in overlap]
        result.warnings.append(
            f"{len(overlap)} of the {n} evaluated images were training images of '{result.version}' "
            f"(it was trained with validation ratio {version.data_snapshot.get('val_ratio')}, seed "
            f"{version.data_snapshot.get('seed')}); these scores overstate it"
            + (f"; on the {len(held_out)} held-out images alone: exact match "
               if held_out else "; no evaluated image was held out"))
        if result.held_out_metrics is not None:
            m = result.held_out_metrics
            result.warnings[-1] += f"{m['exact_match']:.3f}, CIDEr {m['cider']:.3f}, BLEU-4 {m['bleu4']:.3f}"
    return result


def _evaluate_restyler(library: Library, version: Any, **options: Any) -> EvalResult:
    """A restyler version scored with the caption metrics on its restyled held-out pairs (:mod:`core.restyle.evaluation`)."""
    from core.restyle.evaluation import restyle_held_out

    held = restyle_held_out(library, version, **options)
    result = EvalResult(version.base_model, version.adapter_path, predictions=held.predictions,
                        skipped=held.problems, split=held.split, version=version.name)
    _score(result, held.train_overlap)
    if held.train_overlap:
        result.warnings.append(f"{len(held.train_overlap)} of the {len(held.predictions)} evaluated pairs were "
                               f"training pairs of '{version.name}'; these scores overstate it")
    return result


def _score(result: EvalResult, overlap: list[int], kind: str = CAPTION) -> None:
    """*result*'s metrics and intervals from its predictions (and those of the held-out ones alone)."""
    predicted, references = [p for _, p, _ in result.predictions], [r for _, _, r in result.predictions]
    result.metrics = kind_metrics(predicted, references, kind)
    result.intervals = metric_intervals(predicted, references)
    if overlap:
        result.train_overlap = sorted(set(overlap))
        held_out = [p for p in result.predictions if p[0] not in set(overlap)]
        if held_out:
            result.held_out_metrics = kind_metrics([p for _, p, _ in held_out], [r for _, _, r in held_out], kind)
            result.held_out_intervals = metric_intervals([p for _, p, _ in held_out], [r for _, _, r in held_out])


def _training_images(version: Any) -> tuple[set[int], set[str]]:
    """Image ids and fingerprints of a version's training split (empty for plain models)."""
    snapshot = (version.data_snapshot or {}) if version is not None else {}
    rows = snapshot.get("train") or []
    return {int(r[0]) for r in rows}, {str(r[1]) for r in rows}


def _trained_prompt_plan(captioner: Any, resolved: Any) -> Any:
    """The preset / template a version was trained with, as it captions with them."""
    from core.captioning.prompting import NO_PROMPT, plan_for_captioner

    if getattr(captioner, "family", None) is None:
        return NO_PROMPT  # a captioner without a family (test doubles) captions as it is
    return plan_for_captioner(captioner, preset=None, template=None, trained=resolved.trained_prompt)


def _caption_with_prompts(captioner: Any, plan: Any, examples: list[Any], images: list[Any],
                          settings: Any) -> list[str]:
    """Captions of *images* in order, each generated with its rendered prompt (batched per prompt)."""
    from core.captioning.prompting import prompt_batches, render_prompts

    prompts = render_prompts(plan, [ex.path for ex in examples])
    texts: list[str] = [""] * len(images)
    for batch_settings, idx in prompt_batches(range(len(images)), prompts, max(1, len(images)), settings):
        for i, res in zip(idx, captioner.caption([images[i] for i in idx], batch_settings), strict=True):
            texts[i] = plan.finish(res.text)
    return texts
