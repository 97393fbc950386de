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
reads top to bottom as its steps (:func:`_check_request`, :func:`_open_run_folder`,
:func:`_load_base_captioner`, :meth:`_PreparedModel.build`, :func:`_prepare_examples`,
:class:`_TrainingLoop`, :func:`_save_best_version`), all inside one ``try/finally`` that
closes the loaded model:

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
   training image under ``no_grad`` (:func:`_encode_vision_once`) and every micro-batch
   passes that example's entries to the family's ``training_batch`` as ``image_embeds``.
   BLIP, BLIP-2 and VisionEncoderDecoder cache the tower's output (one tensor, row i =
   example i).  The prompted vision-language families (LLaVA, Qwen2-VL, Idefics3,
   PaliGemma, Florence-2) cache, per example, the model's ``get_image_features`` output
   (vision tower + projector) and the prompt tokens, and decline (no cache) when the
   projector trains, as under full fine-tuning: see :mod:`core.captioning.families.chat_vlm`.
   ``cache_vision="auto"`` skips the cache when it would exceed ``cache_limit_mb`` (estimated
   from the first batch).  The vision encoder is kept in eval mode, so the loss is exactly
   the uncached one (tests/test_training_families.py, tests/test_vlm_vision_cache.py).
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

import json
import logging
import math
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from core.captioning.families import ModelFamily, TrainingNotSupportedError, trainable_family_ids
from core.errors import UserFacingError
from core.jobs import NEVER_CANCELLED, CancelToken, JobStats, ProgressCallback, counted_as, no_progress, not_counted
from core.queries import outdated_phrase

from .config import TrainingConfig
from .data import TrainingData, TrainingExample, collect_training_data
from .metrics import (
    caption_metrics,
    compare_to_base,
    comparison_sentence,
    kept_epoch_note,
    metric_intervals,
    selection_score,
)
from .run_state import STATE_FILE, RunStateError, check_state, load_state, save_state

if TYPE_CHECKING:
    from core.library import Library

    from .distributed import DistributedRun

__all__ = ["TRAINABLE_FAMILIES", "TrainingError", "TrainingResult", "train"]

log = logging.getLogger(__name__)

#: Ids of the families :func:`train` can train (declared by each family: ``trainable``).
TRAINABLE_FAMILIES: tuple[str, ...] = tuple(trainable_family_ids())

Report = Callable[..., None]


class TrainingError(UserFacingError):
    """A run that cannot be started or continued (the message says why and what to do)."""


@dataclass
class TrainingResult(JobStats):
    """What a training run did (``skipped_images``: the images it could not use, and why)."""

    TITLE: ClassVar[str] = "Training"
    LABELS: ClassVar[Mapping[str, tuple[str, str]]] = {"epochs": ("epoch", "epochs")}

    name: str
    method: str
    version_id: int | None = None
    path: str | None = None
    resumed_from_epoch: int = not_counted()
    epochs_run: int = counted_as("epochs")
    best_epoch: int = not_counted()
    stopped_early: bool = False
    base_metrics: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    train_size: int = counted_as("train")
    validation_size: int = counted_as("validation")
    #: The test split (seen by neither training nor epoch selection): its size and both models' metrics.
    test_size: int = not_counted()  # counted only when there is one (counts())
    base_test_metrics: dict[str, float] = field(default_factory=dict)
    test_metrics: dict[str, float] = field(default_factory=dict)
    #: Bootstrap intervals per split and model: ``{"validation": {"base": {...}, "trained": {...}}, "test": ...}``.
    intervals: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    #: Version minus base per split (:func:`~.metrics.compare_to_base`).
    comparison: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Whether the version beat the base beyond the noise (on the test split when there is one).
    beats_base: bool = False
    #: Plain sentences about the numbers: no test split, why epoch 1 was kept.
    notes: list[str] = field(default_factory=list)
    skipped_images: list[str] = field(default_factory=list)
    cached_vision: bool = False
    trainable_parameters: int = not_counted()
    processes: int = not_counted(1)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        return {**super().counts(), **({"test": self.test_size} if self.test_size else {})}

    def verdict(self) -> str:
        """Whether the version beat its base, in one sentence (on the test split when there is one)."""
        where = "test" if "test" in self.comparison else "validation"
        return comparison_sentence(self.comparison.get(where, {}), where)


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


def _remove_if_stateless(run_dir: Path) -> None:
    """After a failure: the run folder goes unless it holds saved state to resume from."""
    from core import ownership

    if ownership.owner(run_dir) is not None and not (run_dir / STATE_FILE).exists():
        shutil.rmtree(run_dir, ignore_errors=True)


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
                # Unset LoRA rank/alpha/dropout/targets and lr: the family's measured defaults.
                config = config.with_family_defaults(family)
                model = _PreparedModel.build(captioner, family, config)
                if distributed is not None:
                    distributed.sync_parameters(model.params)
                result.trainable_parameters = sum(p.numel() for p in model.params)
                examples = _prepare_examples(captioner, family, model, config, data, result, report, cancel)
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
    from core.captioning.engine import resolve_model

    from . import versions

    versions.validate_name(name)
    if versions.get_version(library, name) is not None:
        raise TrainingError(f"a model version named '{name}' already exists; choose another --name "
                            "(or delete it with 'captiondesk models delete')")
    data = collect_training_data(library, val_ratio=config.val_ratio, seed=config.seed,
                                 include_imports=config.include_imports)
    data.require()
    resolved = resolve_model(library, base_model, None)
    if resolved.adapter is not None:
        raise TrainingError(f"'{base_model}' is a LoRA version; train from its base model "
                            f"'{resolved.model_name}' instead (or export it merged and train from that folder)")
    return resolved.model_name, data


#: Owner-marker job name of run folders.
RUN_JOB = "train"
#: Files of the earlier, pickled run format: never loaded.
_PICKLED_STATE = ("state.pt", "best.pt")


def _unusable_run(name: str, run_dir: Path, why: str) -> TrainingError:
    return TrainingError(f"the unfinished run '{name}' cannot be resumed: {run_dir} {why}; start over with the "
                         "same command and --restart (or choose another --name)")


def _open_run_folder(library: Library, name: str, base: str, config: TrainingConfig, data: TrainingData) -> Path:
    """The run folder, created or (same settings and data, CaptionDesk's, current format) reused to resume."""
    from core import ownership

    from . import versions

    run_dir = versions.run_dir(library, name)
    key = _config_key(base, config, data)
    if run_dir.is_symlink() or (run_dir.exists() and not run_dir.is_dir()):
        raise _unusable_run(name, run_dir, "is not a folder CaptionDesk made")
    if run_dir.is_dir():
        contents = [p.name for p in run_dir.iterdir()]
        if any(old in contents for old in _PICKLED_STATE):
            raise _unusable_run(name, run_dir, "holds training state in an old format that is no longer loaded")
        if contents and ownership.owner(run_dir) is None:
            raise _unusable_run(name, run_dir, "is not a folder CaptionDesk made")
        if (run_dir / "run.json").is_file():
            try:
                saved = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise _unusable_run(name, run_dir, "is damaged (run.json unreadable)") from None
            if saved != json.loads(json.dumps(key)):
                raise TrainingError(
                    f"an unfinished run named '{name}' exists with different settings or data ({run_dir}); "
                    "re-run it with the same settings to resume, choose another --name, or start over with --restart")
        elif (run_dir / STATE_FILE).exists():
            raise _unusable_run(name, run_dir, "is damaged (run.json missing)")
        if (run_dir / STATE_FILE).exists():
            try:
                check_state(run_dir / STATE_FILE)  # before the model loads: a damaged file fails fast
            except RunStateError as exc:
                raise _unusable_run(name, run_dir / STATE_FILE, f"is {exc}") from None
    ownership.make_owned_dir(run_dir, RUN_JOB, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps(key), encoding="utf-8")
    return run_dir


def _config_key(base: str, config: TrainingConfig, data: TrainingData) -> dict[str, Any]:
    """What must match for a run folder to be resumed."""
    return {"base_model": base, "config": config.to_dict(), "data": data.snapshot()}


def _schedule(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))



# --------------------------------------------------------------------------- model


def _load_base_captioner(base: str, config: TrainingConfig) -> Any:
    """The base model in its family's captioner: fp32 and unoptimised, or 4-bit for QLoRA."""
    if config.method == "qlora":
        return _load_qlora_captioner(base, config)
    from core.captioning import load_captioner

    return load_captioner(base, device=config.device, optimize="none")


def _trainable_family(captioner: Any) -> ModelFamily:
    family: ModelFamily = captioner.family
    if family.trainable:
        return family
    model_type = getattr(getattr(getattr(captioner, "model", None), "config", None), "model_type", None)
    what = f"{family.id} models" + (f" ({model_type})" if model_type and model_type != family.id else "")
    raise TrainingError(
        f"training {what} is not supported yet; trainable model families: {', '.join(TRAINABLE_FAMILIES)} "
        "(e.g. Salesforce/blip-image-captioning-*, Salesforce/blip2-*, microsoft/git-*, "
        "nlpconnect/vit-gpt2-image-captioning, Florence-2, LLaVA/JoyCaption, Qwen2-VL, SmolVLM, PaliGemma)")


def _qlora_device(config: TrainingConfig) -> str:
    """Where a QLoRA run can go: ``cuda`` when present, else ``cpu`` if bitsandbytes runs 4-bit there."""
    import torch

    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise TrainingError("QLoRA needs the bitsandbytes package: pip install bitsandbytes "
                            "(or use --method lora)") from exc
    wanted = str(config.device)
    if wanted.startswith("cuda") or (wanted == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingError("--device cuda was asked for but no CUDA GPU is available")
        return "cuda" if wanted == "auto" else wanted
    if wanted == "mps":
        raise TrainingError("QLoRA (bitsandbytes 4-bit) does not run on Apple GPUs; use --method lora")
    # bitsandbytes >= 0.45 has CPU kernels for 4-bit layers; older builds fail here.
    try:
        import bitsandbytes.functional as bnbf

        probe = torch.randn(64, 64)
        packed, state = bnbf.quantize_4bit(probe, quant_type="nf4")
        restored = bnbf.dequantize_4bit(packed, state)
        if restored.shape != probe.shape or not torch.isfinite(restored).all():
            raise RuntimeError("4-bit round trip gave a wrong result")
    except Exception as exc:  # noqa: BLE001 - any failure means: not usable on this CPU
        raise TrainingError(f"QLoRA needs an NVIDIA GPU with CUDA, or a bitsandbytes build with CPU "
                            f"support ({exc}); use --method lora on this machine") from exc
    return "cpu"


def _load_qlora_captioner(base: str, config: TrainingConfig) -> Any:
    """The base model quantized to 4 bit (bitsandbytes NF4), inside its family's captioner.

    On CUDA the 4-bit layers compute in bf16 (fp16 where bf16 is missing); on a CPU,
    where bitsandbytes also runs, in fp32 — slower than plain LoRA, but the base model
    takes ~1/4 of the memory, which is what lets a large model (BLIP-2) train at all.
    The weights are loaded once, already quantized, through the same loader as for
    captioning (family class, processor, prompts, error messages).
    """
    import torch
    from transformers import BitsAndBytesConfig

    from core.captioning import load_captioner

    device = _qlora_device(config)
    if device.startswith("cuda"):
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        device_map: dict[str, Any] = {"": torch.device(device).index or 0}
    else:
        compute, device_map = torch.float32, {"": "cpu"}
        log.warning("QLoRA on the CPU: the base model is held in 4 bit to save memory, "
                    "but steps are slower than --method lora")
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute,
                               bnb_4bit_use_double_quant=True)
    return load_captioner(base, device=device, optimize="none",
                          model_kwargs={"quantization_config": quant, "device_map": device_map})


def _keep_4bit_layers_trainable(model: Any) -> int:
    """Keep every bitsandbytes 4-bit layer on its trainable (autograd) path; returns how many.

    bitsandbytes >= 0.50 repacks a ``Linear4bit`` weight into a CPU inference layout the
    first time the layer runs in eval mode without grad (our per-epoch evaluation), and
    from then on uses a kernel whose ``result += bias`` breaks backward ("a view of a leaf
    Variable that requires grad is being used in an in-place operation").  Turning the
    repacking off keeps training and evaluation on the same kernel; a weight that was
    already repacked is converted back.  Older releases have neither attribute: no-op.
    """
    count = 0
    for module in model.modules():
        if not hasattr(module, "support_avx512bf16_for_cpu"):
            continue
        module.support_avx512bf16_for_cpu = False
        weight = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            from bitsandbytes.nn.modules import _convert_weight_packed_for_cpu_inverse

            weight.data, weight.quant_state = _convert_weight_packed_for_cpu_inverse(weight.data, state)
            module.quant_state = weight.quant_state
        count += 1
    return count


def _all_linear_targets(model: Any, frozen_vision: Any | None) -> list[str]:
    """Every ``nn.Linear`` except the LM head (and a frozen vision encoder), as full module names.

    peft's own ``"all-linear"`` keeps BLIP's head (``text_decoder.cls.predictions.decoder``)
    because BLIP does not report it as the output embeddings; that head is tied to the
    input embeddings, so merging a LoRA into it would change the inputs too and the merged
    model would caption differently from the trained one.
    """
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    skip = {id(m) for m in frozen_vision.modules()} if frozen_vision is not None else set()
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or id(module) in skip or module is head:
            continue
        if name.endswith(("lm_head", "predictions.decoder", "output_projection")):
            continue
        names.append(name)
    return names


def _prepare_model(captioner: Any, family: ModelFamily, config: TrainingConfig) -> tuple[Any, Any, Any]:
    """``(trainable, inner, targets)``: the module to optimise/save, the transformers model, LoRA targets."""
    inner = captioner.model
    vision = family.vision_tower(inner)
    targets: Any = None
    if config.uses_lora:
        from peft import LoraConfig, get_peft_model

        if config.method == "qlora":
            from peft import prepare_model_for_kbit_training

            inner = prepare_model_for_kbit_training(inner, use_gradient_checkpointing=False)
            _keep_4bit_layers_trainable(inner)
        targets = config.target_modules or family.lora_targets(inner.config, train_vision=config.train_vision)
        if targets == "all-linear":
            targets = _all_linear_targets(inner, vision if not config.train_vision else None)
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=targets, bias="none")
        with warnings.catch_warnings():
            # peft reads a transformers property deprecated in 5.x; nothing a user can act on.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            trainable = get_peft_model(inner, lora)
        inner = trainable.base_model.model
        if not config.train_vision and vision is not None:
            for p in vision.parameters():  # "all-linear" may have reached into it
                p.requires_grad_(False)
    else:
        trainable = inner
        for p in inner.parameters():
            p.requires_grad_(True)
        if vision is not None and not config.train_vision:
            for p in vision.parameters():
                p.requires_grad_(False)
    if config.gradient_checkpointing:
        # After get_peft_model: enabling it before makes BLIP fail with "a leaf Variable
        # that requires grad is being used in an in-place operation".
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # transformers also hooks the input embeddings so their output requires grad (needed
        # by *reentrant* checkpointing only).  Under LoRA that output is a frozen leaf, and
        # GIT adds its position embeddings to it in place: "a leaf Variable that requires
        # grad is being used in an in-place operation".  Non-reentrant checkpointing does
        # not need the hook.
        if hasattr(inner, "disable_input_require_grads"):
            inner.disable_input_require_grads()
    return trainable, inner, targets


@dataclass
class _PreparedModel:
    """The model made trainable: what to optimise and save, and its (frozen or not) vision tower."""

    trainable: Any  # PeftModel for LoRA/QLoRA, the transformers model for full fine-tuning
    inner: Any  # the transformers model inside (what the family's loss runs)
    targets: Any  # LoRA target modules (stored with the version), None for full
    vision: Any | None
    vision_frozen: bool
    params: list[Any]

    @classmethod
    def build(cls, captioner: Any, family: ModelFamily, config: TrainingConfig) -> _PreparedModel:
        trainable, inner, targets = _prepare_model(captioner, family, config)
        vision = family.vision_tower(inner)
        frozen = vision is not None and not any(p.requires_grad for p in vision.parameters())
        return cls(trainable, inner, targets, vision, frozen, [p for p in trainable.parameters() if p.requires_grad])

    def set_train_mode(self) -> None:
        self.trainable.train()
        if self.vision_frozen:
            self.vision.eval()  # frozen encoder: no dropout, so cached == uncached


def _trainable_state(model: Any) -> dict[str, Any]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def _load_trainable_state(model: Any, state: dict[str, Any]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise TrainingError(f"the saved run does not fit this model ({missing[0]} not found)")
    import torch

    with torch.no_grad():
        for n, value in state.items():
            params[n].copy_(value.to(params[n].device))



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
    plan = _prompt_plan(captioner, family, config)
    train_prompts = _render_prompts(plan, train_ex)
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
    val_batches, refs = _validation_batches(captioner, config, plan, val_ex, val_images)
    test_batches, test_refs = _validation_batches(captioner, config, plan, test_ex, test_images)
    embeds = None
    if family.supports_vision_cache and model.vision_frozen and config.cache_vision != "no":
        report(0, None, "Encoding training images (once)")
        embeds = _encode_vision_once(captioner, family, model.inner, model.vision, train_images, text, config,
                                     cancel)
        if embeds is not None:
            train_images = []  # the pixels are no longer needed
    result.cached_vision = embeds is not None
    return _Examples(len(train_ex), text, train_images, embeds, val_batches, refs, plan, test_batches, test_refs)


def _prompt_plan(captioner: Any, family: ModelFamily, config: TrainingConfig) -> Any:
    from core.captioning.presets import PromptPlan, UnsupportedPresetError

    model_type = getattr(getattr(captioner.model, "config", None), "model_type", None)
    try:
        return PromptPlan.for_family(family, preset=config.preset, template=config.prompt_template,
                                     model_type=model_type)
    except UnsupportedPresetError as exc:
        raise TrainingError(str(exc)) from exc


def _render_prompts(plan: Any, examples: list[TrainingExample]) -> list[str | None]:
    """Each example's rendered prompt (metadata variables read from the files, no database)."""
    from core.captioning.presets import ImageVariables, read_metadata_variables

    prompts = []
    for ex in examples:
        keywords, description = read_metadata_variables(ex.path) if plan.needs_metadata else ((), None)
        prompts.append(plan.render(ImageVariables(ex.path, None, keywords, description)))
    return prompts


def _validation_batches(captioner: Any, config: TrainingConfig, plan: Any, examples: list[TrainingExample],
                        images: list[Any]) -> tuple[list[tuple[Any, Any]], list[str]]:
    """Validation batches of one prompt each (a prompt is baked into a batch), and their references."""
    from dataclasses import replace

    settings = _eval_settings(config)
    groups: dict[str | None, list[int]] = {}
    for i, prompt in enumerate(_render_prompts(plan, examples)):
        groups.setdefault(prompt, []).append(i)
    batches, refs = [], []
    for prompt, idx in groups.items():
        batch_settings = settings if prompt is None else replace(settings, prompt=prompt)
        for start in range(0, len(idx), config.batch_size):
            chunk = idx[start : start + config.batch_size]
            batches.append((captioner.preprocess([images[i] for i in chunk], batch_settings), batch_settings))
            refs.extend(examples[i].caption for i in chunk)
    return batches, refs


def _eval_settings(config: TrainingConfig) -> Any:
    from core.captioning.settings import GenerationSettings

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
    from core.captioning.base import load_model_image
    from core.imaging import ImageDecodeError

    kept, images = [], []
    for ex in examples:
        try:
            images.append(load_model_image(captioner, ex.path))
            kept.append(ex)
        except ImageDecodeError as exc:
            skipped.append(f"{ex.path}: {exc}")
    return kept, images



# --------------------------------------------------------------------------- the loop


@dataclass
class _LoopState:
    """Where the loop stands; saved after every epoch (``state.safetensors``) so a re-run resumes."""

    epoch: int = 0
    global_step: int = 0
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: float = -math.inf
    best_epoch: int = 0
    #: Captions of the base and of the best epoch (validation) and of the base (test): for the intervals.
    base_predictions: list[str] = field(default_factory=list)
    best_predictions: list[str] = field(default_factory=list)
    base_test_predictions: list[str] = field(default_factory=list)


class _TrainingLoop:
    """AdamW with linear warm-up + cosine decay, gradient clipping and accumulation, optional
    CUDA autocast; an evaluation after every epoch, early stopping, best checkpoint, resume."""

    def __init__(self, captioner: Any, family: ModelFamily, model: _PreparedModel, examples: _Examples,
                 config: TrainingConfig, run_dir: Path, report: Report, cancel: CancelToken,
                 on_epoch: Callable[[dict[str, Any]], None] | None,
                 on_checkpoint: Callable[[int, int, int], None], distributed: DistributedRun | None = None) -> None:
        import torch

        self.distributed = distributed
        self.main = distributed is None or distributed.is_main
        self.captioner, self.family, self.model, self.examples = captioner, family, model, examples
        self.config, self.run_dir, self.report, self.cancel = config, run_dir, report, cancel
        self.on_epoch, self.on_checkpoint = on_epoch, on_checkpoint
        self.device = captioner.device
        self.state_path = run_dir / STATE_FILE
        self.last_predictions: list[str] = []
        self.best_path = run_dir / "best.safetensors"
        self.settings = _eval_settings(config)
        self.micro_per_epoch = math.ceil(examples.size / config.batch_size)
        steps_per_epoch = math.ceil(self.micro_per_epoch / config.grad_accum)
        self.total_steps = steps_per_epoch * config.epochs
        warmup = int(config.warmup_ratio * self.total_steps)
        self.optimizer = torch.optim.AdamW(model.params, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: _schedule(s, warmup, self.total_steps))
        self.amp_dtype = _autocast_dtype(config, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    # -- pieces -----------------------------------------------------------------------

    def predict(self, batches: list[tuple[Any, Any]]) -> list[str]:
        self.model.trainable.eval()
        preds: list[str] = []
        finish = self.examples.plan.finish if self.examples.plan is not None else (lambda text: text)
        for batch, settings in batches:
            preds.extend(finish(r.text) for r in self.captioner.generate(batch, settings))
        return preds

    def evaluate(self) -> dict[str, float]:
        self.last_predictions = self.predict(self.examples.val_batches)
        return caption_metrics(self.last_predictions, self.examples.refs)

    def calibrate(self) -> Any:
        """The confidence calibration of the current weights: how each token scores in their
        captions of the validation split (core/captioning/confidence.py)."""
        from core.captioning.confidence import TokenCalibration

        self.model.trainable.eval()
        results = [r for batch, settings in self.examples.val_batches
                   for r in self.captioner.generate(batch, settings)]
        return TokenCalibration.fit(results)

    def resume(self) -> _LoopState:
        """The saved state of an earlier run of the same settings, or a fresh one."""
        if not self.state_path.exists():
            return _LoopState()
        name = self.run_dir.name.removesuffix(".run")
        try:
            saved = load_state(self.state_path)
            _load_trainable_state(self.model.trainable, saved["weights"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
            self.scaler.load_state_dict(saved["scaler"])
            state = _LoopState(epoch=int(saved["epoch"]), global_step=int(saved["global_step"]),
                               bad_epochs=int(saved["bad_epochs"]), history=list(saved["history"]),
                               best_score=float(saved["best_score"]), best_epoch=int(saved["best_epoch"]),
                               base_predictions=list(saved.get("base_predictions", [])),
                               best_predictions=list(saved.get("best_predictions", [])),
                               base_test_predictions=list(saved.get("base_test_predictions", [])))
        except RunStateError as exc:
            raise _unusable_run(name, self.state_path, f"is {exc}") from None
        except (KeyError, TypeError, ValueError, RuntimeError, TrainingError) as exc:
            raise _unusable_run(name, self.state_path, f"does not fit this run ({type(exc).__name__})") from None
        self.report(state.global_step, self.total_steps, f"Resuming after epoch {state.epoch}")
        return state

    def _batch(self, idx: Any) -> dict[str, Any]:
        ex = self.examples
        text = {key: value[idx] for key, value in ex.text.items()}
        if ex.embeds is not None:
            batch = self.family.training_batch(self.captioner, text, None, ex.embeds[idx])
        else:
            batch = self.family.training_batch(self.captioner, text, [ex.images[i] for i in idx.tolist()], None)
        return {key: value.to(self.device) if hasattr(value, "to") else value for key, value in batch.items()}

    def train_epoch(self, state: _LoopState) -> list[float] | None:
        """One pass over the training data; the micro-batch losses, or None when cancelled."""
        if self.distributed is not None:
            return self.train_epoch_distributed(state)
        import torch

        config = self.config
        self.model.set_train_mode()
        # Dropout (and anything else drawing from torch's generator) per epoch from the seed:
        # a resumed run continues exactly as an uninterrupted one.
        torch.manual_seed(config.seed * 1_000_003 + state.epoch)
        order = torch.randperm(self.examples.size,
                               generator=torch.Generator().manual_seed(config.seed * 7919 + state.epoch))
        losses: list[float] = []
        self.optimizer.zero_grad(set_to_none=True)
        for micro in range(self.micro_per_epoch):
            if self.cancel.is_set():
                return None
            batch = self._batch(order[micro * config.batch_size : (micro + 1) * config.batch_size])
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                loss = self.family.loss(self.model.inner, batch)
            self.scaler.scale(loss / config.grad_accum).backward()
            losses.append(float(loss.detach()))
            if (micro + 1) % config.grad_accum == 0 or micro + 1 == self.micro_per_epoch:
                self.step(state, losses)
        return losses

    def step(self, state: _LoopState, losses: list[float]) -> None:
        """One optimiser step on the accumulated gradients (clipped), and the schedule's next lr."""
        import torch

        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.params, self.config.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        state.global_step += 1
        self.report(state.global_step, self.total_steps,
                    f"Epoch {state.epoch + 1}/{self.config.epochs}, loss {sum(losses) / len(losses):.4f}",
                    epoch=state.epoch + 1)

    def train_epoch_distributed(self, state: _LoopState) -> list[float] | None:
        """:meth:`train_epoch` as one rank of several (core/training/distributed.py): the same
        shuffled micro-batches of ``batch_size`` examples (the global batch), each cut into one
        contiguous shard per rank; a rank's mean loss weighs by its shard's share of the
        micro-batch and the gradients are summed over the ranks before each step, so the
        update and the recorded micro-batch losses are those of one process."""
        import torch

        config, dist = self.config, self.distributed
        assert dist is not None
        self.model.set_train_mode()
        # The same shuffle on every rank; dropout draws differ per rank (rank 0's as in one process).
        torch.manual_seed(config.seed * 1_000_003 + state.epoch + 7_654_321 * dist.rank)
        order = torch.randperm(self.examples.size,
                               generator=torch.Generator().manual_seed(config.seed * 7919 + state.epoch))
        losses: list[float] = []
        pending: list[float] = []  # this rank's weighted micro-batch losses since the last step
        self.optimizer.zero_grad(set_to_none=True)
        for micro in range(self.micro_per_epoch):
            if dist.stop_requested(self.cancel):  # rank 0's cancel stops every rank here
                return None
            global_idx = order[micro * config.batch_size : (micro + 1) * config.batch_size]
            shard = torch.tensor_split(global_idx, dist.world_size)[dist.rank]
            if len(shard):
                share = len(shard) / len(global_idx)
                batch = self._batch(shard)
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    loss = self.family.loss(self.model.inner, batch) * share
                dist.accelerator.backward(self.scaler.scale(loss / config.grad_accum))
                pending.append(float(loss.detach()))
            else:
                pending.append(0.0)  # a short last batch: nothing for this rank, zero gradients
            if (micro + 1) % config.grad_accum == 0 or micro + 1 == self.micro_per_epoch:
                dist.sync_gradients(self.model.params)
                losses.extend(dist.sum(pending))
                pending = []
                self.step(state, losses)
        return losses

    def record(self, state: _LoopState, loss: float | None, metrics: dict[str, float]) -> None:
        record = {"epoch": state.epoch, "loss": loss, **metrics}
        state.history.append(record)
        if self.on_epoch is not None:
            self.on_epoch(dict(record))

    def save_checkpoint(self, state: _LoopState, improved: bool) -> None:
        if not self.main:
            return  # the main rank keeps the run folder
        weights = _trainable_state(self.model.trainable)
        if improved:
            save_state(self.best_path, {"weights": weights})
        save_state(self.state_path, {
            "weights": weights, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "epoch": state.epoch, "global_step": state.global_step,
            "bad_epochs": state.bad_epochs, "history": state.history, "best_score": state.best_score,
            "best_epoch": state.best_epoch, "base_predictions": state.base_predictions,
            "best_predictions": state.best_predictions, "base_test_predictions": state.base_test_predictions})
        self.on_checkpoint(state.global_step, self.total_steps, state.epoch)

    # -- the loop -------------------------------------------------------------------------

    def evaluate_shared(self) -> dict[str, float]:
        """:meth:`evaluate` by the main rank; its metrics on every rank (same early-stopping decisions)."""
        if self.distributed is None:
            return self.evaluate()
        return self.distributed.share(self.evaluate() if self.main else None)

    def run(self, result: TrainingResult) -> _LoopState:
        config = self.config
        state = self.resume()
        result.resumed_from_epoch = state.epoch
        if not state.history:
            self.report(0, self.total_steps, "Evaluating the base model")
            self.record(state, None, self.evaluate_shared())
            if self.main:
                state.base_predictions = self.last_predictions
                # The test split is scored only by the base and the kept version, never to choose.
                state.base_test_predictions = self.predict(self.examples.test_batches)
        result.base_metrics = _metrics_only(state.history[0])
        stopped = bool(state.epoch and config.patience and state.bad_epochs >= config.patience)
        while state.epoch < config.epochs and not stopped:
            losses = self.train_epoch(state)
            if losses is None:
                result.cancelled = True
                break
            self.report(state.global_step, self.total_steps, f"Evaluating epoch {state.epoch + 1}")
            metrics = self.evaluate_shared()
            state.epoch += 1
            self.record(state, round(sum(losses) / len(losses), 5), metrics)
            score = selection_score(metrics)
            improved = score > state.best_score
            if improved:
                state.best_score, state.best_epoch, state.bad_epochs = score, state.epoch, 0
                if self.main:
                    state.best_predictions = self.last_predictions
            else:
                state.bad_epochs += 1
            self.save_checkpoint(state, improved)
            if config.patience and state.bad_epochs >= config.patience and state.epoch < config.epochs:
                result.stopped_early = stopped = True
        result.history = state.history
        result.epochs_run = state.epoch
        result.best_epoch = state.best_epoch
        return state


def _autocast_dtype(config: TrainingConfig, device: Any) -> Any | None:
    """bf16 (fp16 where bf16 is missing) autocast on CUDA, unless disabled; None elsewhere and for QLoRA."""
    import torch

    if device.type != "cuda" or config.mixed_precision == "no" or config.method == "qlora":
        return None
    if config.mixed_precision == "fp16" or (config.mixed_precision == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def _metrics_only(record: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in record.items() if k not in ("epoch", "loss")}


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
        result.base_test_metrics = caption_metrics(state.base_test_predictions, test_refs)
        result.test_metrics = caption_metrics(test_predictions, test_refs)
        result.intervals["test"] = {"base": metric_intervals(state.base_test_predictions, test_refs),
                                    "trained": metric_intervals(test_predictions, test_refs)}
        result.comparison["test"] = compare_to_base(state.base_test_predictions, test_predictions, test_refs)
    where = "test" if "test" in result.comparison else "validation"
    result.beats_base = bool(result.comparison.get(where, {}).get("beats_base", False))
    note = data.test_note()
    if note is not None:
        result.notes.append(note)
    validation_beats = bool(result.comparison.get("validation", {}).get("beats_base", False))
    note = kept_epoch_note(state.best_epoch, state.epoch, loop.config.lr, validation_beats)
    if note is not None:
        result.notes.append(note)
