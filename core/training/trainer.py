"""Retrain a captioning model from the library's verified captions (a core job).

Trainable families (:data:`TRAINABLE_FAMILIES`, those whose
:class:`~core.captioning.families.base.ModelFamily` says ``trainable``): **BLIP**,
**BLIP-2** with an OPT (decoder-only) or Flan-T5 (encoder-decoder) language model,
**GIT**, **VisionEncoderDecoder** (e.g. ViT-GPT2) and the prompted vision-language
families (**Florence-2**, **LLaVA**/JoyCaption, **Qwen2-VL**/Qwen2.5-VL,
**Idefics3**/SmolVLM, **PaliGemma**: :mod:`core.captioning.families.chat_vlm`, trained on
exactly their captioning prompt, loss on the caption tokens only).  The generic family
(any other ``AutoModelForImageTextToText`` model) is refused with a
:class:`TrainingError` naming the trainable families.

Everything that differs between families — the vision tower, LoRA targets, how a
caption becomes a training batch that mirrors generation, the loss, whether the
frozen vision tower's output can be cached — is asked of the family object; this
module is the loop, and it always closes the model it loaded, whatever fails.

:func:`train` is deliberately an explicit loop rather than a ``Trainer`` subclass; it
reads top to bottom as its steps (:func:`_check_request`, :func:`.run_folder._open_run_folder`,
:func:`.model_setup._load_base_captioner`, :meth:`.model_setup._PreparedModel.build`,
:func:`.examples._prepare_examples`, :class:`.loop._TrainingLoop`, :func:`_save_best_version`),
all inside one ``try/finally`` that closes the loaded model:

1. **Data** — :func:`core.training.data.collect_training_data` (verified captions, the
   shared fingerprint split); too little data is refused with a clear message.
2. **Model** — loaded through :func:`core.captioning.load_captioner` (``optimize="none"``,
   fp32), so every loading error reads the same as when captioning, and the family's
   captioner is reused for evaluation.  LoRA/QLoRA wrap it with peft
   (``get_peft_model``; gradient checkpointing is enabled *after* it, see the ML stack
   notes); full fine-tuning trains everything except, by default, the vision encoder.
   Training batches are built the way each family's captioner generates (what comes
   first, where generation stops, which labels are masked): see each family's
   ``encode_training_batch`` in ``core/captioning/families/``.
3. **Frozen vision encoder → embeddings computed once.**  For families with
   ``supports_vision_cache``, when the vision encoder is not trained (and
   ``cache_vision`` is not ``no``), the family's ``vision_cache_entries`` runs once per
   training image under ``no_grad`` (:func:`.examples._encode_vision_once`) and every micro-batch
   passes that example's entries to the family's ``training_batch`` as ``image_embeds``.
   BLIP, BLIP-2 and VisionEncoderDecoder cache the tower's output (one tensor, row i =
   example i).  The prompted vision-language families (LLaVA, Qwen2-VL, Idefics3,
   PaliGemma, Florence-2) cache, per example, the model's ``get_image_features`` output
   (vision tower + projector) and the prompt tokens, and decline (no cache) when the
   projector trains, as under full fine-tuning: see :mod:`core.captioning.families.chat_vlm`.
   ``cache_vision="auto"`` skips the cache when it would exceed ``cache_limit_mb`` (estimated
   from the first batch).  The vision encoder is kept in eval mode, so the loss is exactly
   the uncached one (tests/core/training/test_training_families.py, tests/core/captioning/test_vlm_vision_cache.py).
   GIT's forward takes pixels only, so GIT always runs its image encoder.
   ``benchmarks/train_step.py`` measures the gain (BLIP; ``--family`` for the VLMs).
4. **Loop** — AdamW, linear warm-up then cosine decay, gradient clipping, gradient
   accumulation, bf16/fp16 autocast on CUDA (fp16 with a GradScaler), evaluation on the
   validation split after every epoch (greedy captions → :mod:`.metrics`), early stopping
   after ``patience`` evaluations without improvement, best checkpoint by CIDEr + BLEU-4.
   The base model and the kept epoch are also scored on the test split (when the library has
   enough photos for one, :mod:`core.splits`), which chooses nothing; bootstrap intervals and
   a paired comparison with the base (:func:`.metrics.compare_to_base`) decide ``beats_base``.
5. **Resume** — after every epoch the trainable weights, optimiser, scheduler, history
   and best checkpoint are saved in the run folder (``<library>.models/<name>.run``) as
   data, never pickle (:mod:`.run_state`: safetensors with a JSON header).  Running the
   same ``train`` again (same name, settings and data) continues from the last finished
   epoch; a cancelled run loses at most the epoch in progress.  A run folder that cannot
   be resumed (damaged, another format, not CaptionDesk's) is refused naming it;
   ``restart=True`` (``train --restart``) discards it and starts over.  A run that fails
   before it saved any state removes its run folder, so the corrected command starts clean.
6. **Version** — the best weights are saved (adapter via ``save_pretrained``, or the whole
   model + processor for full fine-tuning) to ``<library>.models/<name>`` and registered
   as a :class:`~core.models.ModelVersion` with config, data snapshot and metrics
   (base model and trained), usable as ``--model NAME`` everywhere.

torch, transformers and peft are imported inside functions.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from core.jobs import NEVER_CANCELLED, CancelToken, ProgressCallback, no_progress

from .config import TrainingConfig
from .data import TrainingData, collect_training_data
from .examples import _prepare_examples
from .loop import _LoopState, _metrics_only, _TrainingLoop
from .lr_range import find_learning_rate
from .metrics import (
    compare_to_base,
    kept_epoch_note,
    kind_metrics,
    metric_intervals,
)
from .model_setup import (
    TRAINABLE_FAMILIES,
    _load_base_captioner,
    _load_trainable_state,
    _PreparedModel,
    _trainable_family,
)
from .result import TrainingError, TrainingResult
from .run_folder import _open_run_folder, _remove_if_stateless, _unusable_run
from .run_state import RunStateError, load_state

if TYPE_CHECKING:
    from core.library import Library

    from .distributed import DistributedRun

__all__ = ["TRAINABLE_FAMILIES", "TrainingError", "TrainingResult", "train"]

# --------------------------------------------------------------------------- the job


def train(
    library: Library,
    base_model: str,
    name: str,
    config: TrainingConfig | None = None,
    *,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken = NEVER_CANCELLED,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    distributed: DistributedRun | None = None,
    restart: bool = False,
) -> TrainingResult:
    """Train *base_model* on the library's verified captions and save it as version *name*.

    *on_epoch* receives each evaluation record (``epoch``, ``loss``, metrics), epoch 0
    being the base model — for a live chart.  Returns a :class:`TrainingResult`;
    ``cancelled`` results leave the run folder behind so the same call resumes.  The
    loaded model is closed (memory released) however the run ends.

    *distributed*: this process's rank in a multi-process run
    (:mod:`core.training.distributed`; every rank calls :func:`train` with the same
    arguments).  Only the main rank writes (run folder, job record, version) and
    evaluates; the others may open the library read-only and return a result without a
    version.  None: one process, as always.

    *restart*: discard an unfinished run of *name* (its run folder) and start over.

    Raises:
        InsufficientDataError: too few verified captions (a ``ValueError``).
        TrainingError: bad name, unsupported family, a run folder that does not match.
        ModelLoadError: the base model cannot be loaded.
    """
    config = config or TrainingConfig()
    started = time.monotonic()
    base, data = _check_request(library, base_model, name, config)
    main = distributed is None or distributed.is_main
    if main:
        if restart:
            from . import versions

            versions.discard_run(library, name)
        run_dir = _open_run_folder(library, name, base, config, data)
    if distributed is not None:
        distributed.barrier()  # the main rank has created (or checked) the run folder
        if not main:
            from . import versions

            run_dir = versions.run_dir(library, name)
    try:
        return _train_in(library, base, name, config, data, run_dir, started, progress=progress, cancel=cancel,
                         on_epoch=on_epoch, distributed=distributed)
    except BaseException:
        if main:
            _remove_if_stateless(run_dir)
        raise


def _train_in(library: Library, base: str, name: str, config: TrainingConfig, data: TrainingData, run_dir: Path,
              started: float, *, progress: ProgressCallback, cancel: CancelToken,
              on_epoch: Callable[[dict[str, Any]], None] | None, distributed: DistributedRun | None) -> TrainingResult:
    """:func:`train` once the request is checked and the run folder is ready."""
    main = distributed is None or distributed.is_main
    result = TrainingResult(name=name, method=config.method)

    params = {"base_model": base, "name": name, "config": config.to_dict(),
              "train": len(data.train), "validation": len(data.validation), "test": len(data.test)}
    if distributed is not None:
        params["processes"] = distributed.world_size
    # Other ranks keep no job record: they must not write to the library.
    job = library.job("train", params, result, progress) if main else _RankJob(result)
    with job as run:

        def report(done: int, total: int | None, message: str, **counts: int) -> None:
            # Once per optimiser step or evaluation: not throttled; the loop's own counters.
            run.progress(done, total, message, force=True, counts=counts)

        def on_checkpoint(done: int, total: int, epoch: int) -> None:
            run.save(done=done, total=total, checkpoint={"epoch": epoch})

        report(0, None, "Loading model")
        # Seeds, deterministic algorithms: scoped to this run (restored afterwards).
        with _reproducible(config.seed):
            # Each rank loads the model on its own device (its GPU, or the CPU).
            captioner = _load_base_captioner(
                base, config if distributed is None else replace(config, device=distributed.training_device()))
            try:
                family = _trainable_family(captioner)
                # Unset LoRA rank/alpha/dropout/targets: the family's measured defaults.
                config = _with_kind_prompt(library, config.with_family_defaults(family), family, captioner)
                model = _PreparedModel.build(captioner, family, config)
                if distributed is not None:
                    distributed.sync_parameters(model.params)
                result.trainable_parameters = sum(p.numel() for p in model.params)
                examples = _prepare_examples(captioner, family, model, config, data, result, report, cancel)
                if config.lr is None:  # no rate given: the range test on this data chooses it
                    lr_test = find_learning_rate(captioner, family, model, examples, config, run_dir, report,
                                                 cancel, distributed)
                    if lr_test is None:
                        result.cancelled = True
                        if main:
                            run.finish(done=0, message="cancelled while finding the learning rate")
                        return result
                    config, result.lr_range = replace(config, lr=lr_test.lr), lr_test.to_dict()
                loop = _TrainingLoop(captioner, family, model, examples, config, run_dir, report, cancel,
                                     on_epoch, on_checkpoint, distributed)
                state = loop.run(result)
                # Only the main rank records the outcome and saves the version.
                if main and result.cancelled:
                    report(state.global_step, loop.total_steps, "Cancelled (run again to resume)")
                    run.finish(done=state.global_step,
                               message=f"cancelled in epoch {state.epoch + 1}; resumable from {run_dir}")
                elif main:
                    report(state.global_step, loop.total_steps, "Saving the best model")
                    version = _save_best_version(library, loop, state, base, name, data, result)
                    shutil.rmtree(run_dir, ignore_errors=True)
                    result.version_id, result.path = version.id, version.adapter_path or version.base_model
                    run.finish(done=state.global_step, total=loop.total_steps,
                               checkpoint={"epoch": state.epoch, "best_epoch": state.best_epoch, "version_id": version.id})
                    report(state.global_step, loop.total_steps, "Finished")
                if distributed is not None:
                    distributed.barrier()  # the version is saved before any rank leaves
            finally:
                captioner.close()  # whatever failed after loading: give the memory back
    result.seconds = time.monotonic() - started
    return result


class _RankJob:
    """What a non-main rank has instead of ``library.job(...)``: the same calls, no writes."""

    def __init__(self, stats: TrainingResult) -> None:
        self.stats = stats

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def progress(self, *_args: Any, **_kwargs: Any) -> None:
        return None

    def save(self, **_values: Any) -> None:
        return None

    def finish(self, **_values: Any) -> None:
        return None


# --------------------------------------------------------------------------- reproducibility


@contextmanager
def _reproducible(seed: int) -> Iterator[None]:
    """Same seed + same data -> same version on the same machine, for the scope of one run.

    Every random choice of a run comes from *seed*: the split (``assign_split``), the
    shuffle (its own generator per epoch), and through torch's global generator the LoRA
    initialisation and dropout - :meth:`_TrainingLoop.train_epoch` reseeds it per epoch so a
    resumed run draws what an uninterrupted one would.  torch's deterministic algorithms
    are switched on (``warn_only``: an op without a deterministic version warns instead of
    failing) and cuDNN autotuning off.  The global RNG state and the deterministic settings
    are restored afterwards, so captioning in the same process is not affected.
    """
    import os
    import random

    import torch

    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    was_benchmark = torch.backends.cudnn.benchmark
    # cuBLAS needs this to be deterministic on CUDA (read when cuBLAS starts).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    python_state = random.getstate()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []):
        random.seed(seed)
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)
            torch.backends.cudnn.benchmark = was_benchmark
            random.setstate(python_state)


# --------------------------------------------------------------------------- before loading


def _check_request(library: Library, base_model: str, name: str, config: TrainingConfig) -> tuple[str, TrainingData]:
    """``(base model, data)`` after the checks that need no model: name, data size, base."""
    from core.captioning.registry import resolve_model

    from . import versions

    versions.validate_name(name)
    if versions.get_version(library, name) is not None:
        raise TrainingError(f"a model version named '{name}' already exists; choose another --name "
                            "(or delete it with 'captiondesk models delete')")
    from core.kinds import get_kind

    with library.db.read() as session:
        get_kind(session, config.kind)  # an unknown kind: KindError naming the library's kinds
    data = collect_training_data(library, val_ratio=config.val_ratio, seed=config.seed,
                                 include_imports=config.include_imports, test_ratio=config.test_ratio,
                                 kind=config.kind)
    data.require()
    resolved = resolve_model(library, base_model, None)
    if resolved.adapter is not None:
        raise TrainingError(f"'{base_model}' is a LoRA version; train from its base model "
                            f"'{resolved.model_name}' instead (or export it merged and train from that folder)")
    return resolved.model_name, data


def _with_kind_prompt(library: Library, config: TrainingConfig, family: Any, captioner: Any) -> TrainingConfig:
    """*config* asking for its kind's default prompt when it names none and the family can be
    asked for that kind; otherwise as it is.

    A family that only continues a text (BLIP, GIT, …) cannot be *asked* for keywords, but it
    can *learn* to write them: its version then writes that kind unprompted, which is what a
    version trained on one kind is for (it records the kind, and captions only that kind).
    """
    from core.captioning.prompting import check_family_writes_kind, kind_request
    from core.kinds import CAPTION, KindError, get_kind

    if config.kind == CAPTION or config.preset is not None or config.prompt_template is not None:
        return config
    with library.db.read() as session:
        kind = get_kind(session, config.kind)
    try:
        preset, template = kind_request(kind, None, None)
        check_family_writes_kind(family, kind, preset, template, getattr(captioner, "model_type", None))
    except KindError:  # no prompt of its own, or a family that cannot be asked: learnt unprompted
        return config
    return replace(config, preset=preset, prompt_template=template)


# --------------------------------------------------------------------------- the version


def _save_best_version(library: Library, loop: _TrainingLoop, state: _LoopState, base: str, name: str,
                       data: TrainingData, result: TrainingResult) -> Any:
    """Load the best epoch's weights back and register them as model version *name*."""
    from . import versions

    model, config = loop.model, loop.config
    if state.best_epoch > 0:
        try:
            best_weights = load_state(loop.best_path)["weights"]
        except (RunStateError, KeyError) as exc:
            raise _unusable_run(name, loop.best_path, f"is {exc}") from None
        _load_trainable_state(model.trainable, best_weights)
    best = next(h for h in state.history if h["epoch"] == state.best_epoch)
    result.metrics = _metrics_only(best)
    _judge(loop, state, data, result)
    if loop.distributed is not None:
        result.processes = loop.distributed.world_size
    stored_config = {**config.to_dict(), "target_modules": model.targets, "family": loop.family.id,
                     "trainable_parameters": result.trainable_parameters, "cached_vision": result.cached_vision,
                     "confidence_calibration": loop.calibrate().to_dict(),
                     **({"lr_range": result.lr_range} if result.lr_range else {}),
                     **({"processes": result.processes} if result.processes > 1 else {})}
    metrics_record = {"base": result.base_metrics, "trained": result.metrics, "best_epoch": state.best_epoch,
                      "history": state.history, "stopped_early": result.stopped_early,
                      "intervals": result.intervals, "comparison": result.comparison,
                      "beats_base": result.beats_base, "notes": result.notes,
                      **({"test": {"base": result.base_test_metrics, "trained": result.test_metrics,
                                   "n": result.test_size}} if result.test_size else {})}
    return versions.save_version(
        library, name=name, base_model=base, model=model.trainable, captioner=loop.captioner,
        method=config.method, family=loop.family.id, config=stored_config, metrics=metrics_record,
        data_snapshot=data.snapshot(),
    )


def _judge(loop: _TrainingLoop, state: _LoopState, data: TrainingData, result: TrainingResult) -> None:
    """Intervals, the comparison with the base (test split when there is one) and the notes, with the best
    weights loaded."""
    refs = loop.examples.refs
    if len(state.base_predictions) == len(refs) == len(state.best_predictions):
        result.intervals["validation"] = {"base": metric_intervals(state.base_predictions, refs),
                                          "trained": metric_intervals(state.best_predictions, refs)}
        result.comparison["validation"] = compare_to_base(state.base_predictions, state.best_predictions, refs)
    test_refs = loop.examples.test_refs
    if test_refs and len(state.base_test_predictions) == len(test_refs):
        test_predictions = loop.predict(loop.examples.test_batches)
        kind = loop.config.kind
        result.base_test_metrics = kind_metrics(state.base_test_predictions, test_refs, kind)
        result.test_metrics = kind_metrics(test_predictions, test_refs, kind)
        result.intervals["test"] = {"base": metric_intervals(state.base_test_predictions, test_refs),
                                    "trained": metric_intervals(test_predictions, test_refs)}
        result.comparison["test"] = compare_to_base(state.base_test_predictions, test_predictions, test_refs)
    where = "test" if "test" in result.comparison else "validation"
    if test_refs and len(state.base_test_predictions) == len(test_refs):
        _semantic(loop, result, state.base_test_predictions, test_predictions, test_refs, loop.examples.test_paths,
                  result.base_test_metrics, result.test_metrics)
    elif len(state.base_predictions) == len(refs) == len(state.best_predictions):
        _semantic(loop, result, state.base_predictions, state.best_predictions, refs, loop.examples.paths,
                  result.base_metrics, result.metrics)
    result.beats_base = bool(result.comparison.get(where, {}).get("beats_base", False))
    for note in (data.test_note(), data.duplicates_note()):
        if note is not None:
            result.notes.append(note)
    validation_beats = bool(result.comparison.get("validation", {}).get("beats_base", False))
    note = kept_epoch_note(state.best_epoch, state.epoch, loop.config.lr, validation_beats)
    if note is not None:
        result.notes.append(note)


def _semantic(loop: _TrainingLoop, result: TrainingResult, base: list[str], trained: list[str], refs: list[str],
              paths: list[str], base_metrics: dict[str, float], metrics: dict[str, float]) -> None:
    """BERTScore / CLIPScore of the base and the kept epoch on one held-out split, when the config asks."""
    config = loop.config
    if config.bertscore_model is None and config.clip_model is None:
        return
    from .semantic_metrics import semantic_metrics

    for predictions, into in ((base, base_metrics), (trained, metrics)):
        scored = semantic_metrics(predictions, refs, paths, bertscore_model=config.bertscore_model,
                                  clip_model=config.clip_model, device=str(loop.captioner.device))
        into.update(scored.metrics)
    result.notes.extend(s for s in [*scored.skipped, *scored.notes] if not s.endswith("turned off"))
