"""``train --restyler``: learn a restyler from the library's (model caption → verified caption) pairs.

The run (:func:`train_restyler`) is a short explicit loop over text pairs, with the
captioner trainer's settings (:class:`~core.training.config.TrainingConfig`), metrics,
versions and result:

1. **Data** — :func:`core.restyle.pairs.collect_restyle_pairs`, split like every other
   split of the library; too few pairs is a :class:`~core.training.result.TrainingError`.
2. **Model** — the base causal LM through :func:`core.restyle.model.load_causal_lm` (fp32;
   QLoRA: 4-bit NF4 through bitsandbytes, on CUDA only), wrapped with peft for LoRA/QLoRA
   (peft's default targets for known architectures, else ``all-linear``).
3. **Examples** — the input is :func:`core.restyle.model.render_prompt` (what restyling
   feeds the model) and the label the verified text plus EOS; the loss is on the label only.
4. **Loop** — AdamW, linear warm-up then cosine decay, gradient clipping, bf16 autocast on
   CUDA; after every epoch the validation pairs are restyled (greedy, left-padded batches:
   the restyler's own ``restyle``) and scored with :mod:`core.training.metrics`; the best
   epoch by CIDEr + BLEU-4 is kept, ``patience`` epochs without improvement stop the run.
4b. **Resume** — as captioner training resumes (:mod:`core.training.run_folder`,
   :mod:`core.training.run_state`): after every epoch the trainable weights, optimiser,
   scheduler, shuffling and torch random states, history and best epoch are saved as data
   in the run folder (``<library>.models/<name>.run``).  Cancel (between steps) ends the
   run without a version; the same call again (same base, settings, style and pairs)
   continues after the last finished epoch to the result an uninterrupted run gives, and
   ``restart=True`` (``train --restyler --restart``) starts over.
5. **Version** — adapter (LoRA/QLoRA) or model + tokenizer (full) saved as a
   :class:`~core.models.ModelVersion` whose config records ``target: restyler`` and the
   style prompt, with the base's and the version's metrics on validation (and test).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.jobs import NEVER_CANCELLED, CancelToken, ProgressCallback, no_progress
from core.training.config import MIN_TRAIN, MIN_VALIDATION, TrainingConfig
from core.training.metrics import caption_metrics, compare_to_base, metric_intervals, selection_score
from core.training.result import TrainingError, TrainingResult
from core.training.run_folder import _open_run_folder, _remove_if_stateless
from core.training.run_state import STATE_FILE, load_state, save_state
from core.training.versions import discard_run, get_version, save_version, validate_name

from .model import DEFAULT_STYLE, LocalRestyler, RestyleSettings, load_causal_lm, render_prompt, uses_chat_template
from .pairs import RestylePair, RestylePairs, collect_restyle_pairs
from .spec import RESTYLER_TARGET

if TYPE_CHECKING:
    from core.library import Library

#: LoRA settings for a restyler when the config leaves them unset (the usual causal-LM ones).
LORA_DEFAULTS = {"r": 16, "alpha": 32, "dropout": 0.05, "lr": 2e-4}


def train_restyler(
    library: Library,
    base_model: str,
    name: str,
    config: TrainingConfig | None = None,
    *,
    style: str | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken = NEVER_CANCELLED,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    restart: bool = False,
) -> TrainingResult:
    """Train restyler version *name* on *base_model* (a causal LM folder or hub id); see the module docstring.

    A cancelled result leaves the run folder behind so the same call resumes; *restart*
    discards an unfinished run of *name* first."""
    config = config or TrainingConfig()
    validate_name(name)
    if get_version(library, name) is not None:
        raise TrainingError(f"a model version named '{name}' already exists; choose another --name")
    style = style or DEFAULT_STYLE
    pairs = collect_restyle_pairs(library, val_ratio=config.val_ratio, seed=config.seed)
    if len(pairs.train) < MIN_TRAIN or len(pairs.validation) < MIN_VALIDATION:
        raise TrainingError(
            f"not enough restyle pairs: {pairs.summary()}; at least {MIN_TRAIN} for training and "
            f"{MIN_VALIDATION} for validation are needed. A pair is a model's caption that a person corrected "
            "or accepted in the review.")
    config = _with_defaults(config)
    if restart:
        discard_run(library, name)
    run_dir = _open_run_folder(library, name, base_model, config, pairs,
                               extra={"target": RESTYLER_TARGET, "style": style})
    try:
        result = _train_in(library, base_model, name, config, style, pairs, run_dir, progress, cancel, on_epoch)
    except BaseException:
        _remove_if_stateless(run_dir)
        raise
    if result.version_id is not None:
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def _train_in(library: Library, base_model: str, name: str, config: TrainingConfig, style: str, pairs: RestylePairs,
              run_dir: Path, progress: ProgressCallback, cancel: CancelToken,
              on_epoch: Callable[[dict[str, Any]], None] | None) -> TrainingResult:
    """:func:`train_restyler` once the request is checked and the run folder is ready."""
    import torch

    started = time.monotonic()
    result = TrainingResult(name=name, method=config.method, train_size=len(pairs.train),
                            validation_size=len(pairs.validation), test_size=len(pairs.test))
    with library.job("train-restyler", {"base": base_model, "name": name, "style": style,
                                        "config": config.to_dict()}, result, progress) as run:
        torch.manual_seed(config.seed)
        model, tokenizer, device = _load_base(base_model, config)
        restyler = LocalRestyler(model, tokenizer, name=base_model, adapter=None, device=device)
        settings = RestyleSettings(style, config.max_new_tokens)
        try:
            run.progress(0, None, "Scoring the base model", force=True)
            base_val = _restyle(restyler, pairs.validation, settings)
            base_test = _restyle(restyler, pairs.test, settings)
            result.base_metrics = caption_metrics(base_val, [p.target for p in pairs.validation])
            trainable = _prepare(model, config)
            restyler.model = trainable
            result.trainable_parameters = sum(p.numel() for p in trainable.parameters() if p.requires_grad)
            best = _loop(trainable, restyler, pairs, config, settings, result, run, cancel, on_epoch, run_dir)
            if result.cancelled or best is None:
                run.finish(message=f"cancelled after epoch {result.epochs_run}; resumable from {run_dir}")
                return result
            _load_state(trainable, best)
            val = _restyle(restyler, pairs.validation, settings)
            refs = [p.target for p in pairs.validation]
            result.metrics = caption_metrics(val, refs)
            result.intervals["validation"] = {"base": metric_intervals(base_val, refs),
                                              "trained": metric_intervals(val, refs)}
            result.comparison["validation"] = compare_to_base(base_val, val, refs)
            if pairs.test:
                test = _restyle(restyler, pairs.test, settings)
                test_refs = [p.target for p in pairs.test]
                result.base_test_metrics = caption_metrics(base_test, test_refs)
                result.test_metrics = caption_metrics(test, test_refs)
                result.comparison["test"] = compare_to_base(base_test, test, test_refs)
            result.beats_base = bool(result.comparison.get("test", result.comparison["validation"])["beats_base"])
            run.progress(result.epochs_run, result.epochs_run, "Saving the version", force=True)
            version = save_version(
                library, name=name, base_model=base_model, model=trainable, captioner=restyler,
                method=config.method, family="causal-lm",
                config={"target": RESTYLER_TARGET, "style": style,
                        "prompt_format": "chat" if uses_chat_template(tokenizer) else "plain",
                        "training": config.to_dict()},
                metrics={"base": result.base_metrics, "trained": result.metrics, "beats_base": result.beats_base,
                         "best_epoch": result.best_epoch, "history": result.history,
                         **({"test": {"base": result.base_test_metrics, "trained": result.test_metrics}}
                            if pairs.test else {})},
                data_snapshot=pairs.snapshot())
            result.version_id, result.path = version.id, version.adapter_path or version.base_model
        finally:
            restyler.close()
        result.seconds = time.monotonic() - started
    return result


def _with_defaults(config: TrainingConfig) -> TrainingConfig:
    d = LORA_DEFAULTS
    return replace(config, lora_r=config.lora_r or d["r"], lora_alpha=config.lora_alpha or d["alpha"],
                   lora_dropout=d["dropout"] if config.lora_dropout is None else config.lora_dropout,
                   lr=config.lr or (d["lr"] if config.uses_lora else 2e-5))


def _load_base(base_model: str, config: TrainingConfig) -> tuple[Any, Any, Any]:
    """The base causal LM in fp32 (QLoRA: 4-bit NF4 on CUDA)."""
    import torch

    if config.method != "qlora":
        return load_causal_lm(base_model, device=config.device, dtype=torch.float32)
    if not torch.cuda.is_available() or config.device in ("cpu", "mps"):
        raise TrainingError("QLoRA restylers train on an NVIDIA GPU with CUDA; use --method lora on this machine")
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as exc:
        raise TrainingError("QLoRA needs the bitsandbytes package: pip install bitsandbytes "
                            "(or use --method lora)") from exc
    device = "cuda" if config.device == "auto" else config.device
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute,
                                      bnb_4bit_use_double_quant=True)
    return load_causal_lm(base_model, device=device, dtype=compute,
                          model_kwargs={"quantization_config": quantization, "device_map": {"": device}})


def _prepare(model: Any, config: TrainingConfig) -> Any:
    """The trainable model: peft LoRA around *model*, or *model* itself for full fine-tuning."""
    if not config.uses_lora:
        model.train()
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    if config.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    options = {"r": config.lora_r, "lora_alpha": config.lora_alpha, "lora_dropout": config.lora_dropout,
               "task_type": "CAUSAL_LM"}
    try:
        peft_model = get_peft_model(model, LoraConfig(target_modules=config.target_modules, **options))
    except ValueError:
        # peft knows no default targets for this architecture: every linear layer.
        peft_model = get_peft_model(model, LoraConfig(target_modules="all-linear", **options))
    if config.gradient_checkpointing and config.method != "qlora":
        peft_model.base_model.model.gradient_checkpointing_enable()
    return peft_model


def _restyle(restyler: LocalRestyler, pairs: list[RestylePair], settings: RestyleSettings,
             batch_size: int = 16) -> list[str]:
    import torch

    was_training = restyler.model.training
    restyler.model.eval()
    texts: list[str] = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            results = restyler.restyle([p.source for p in pairs[start : start + batch_size]], settings)
            texts.extend(r.text if not isinstance(r, BaseException) else "" for r in results)
    if was_training:
        restyler.model.train()
    return texts


def encode_pairs(tokenizer: Any, pairs: list[RestylePair], style: str, max_length: int) -> list[tuple[list[int], int]]:
    """Per pair ``(token ids, prompt length)``: the rendered prompt, then the target's tokens and EOS."""
    special = not uses_chat_template(tokenizer)
    encoded = []
    for pair in pairs:
        prompt = tokenizer(render_prompt(tokenizer, style, pair.source), add_special_tokens=special)["input_ids"]
        target = tokenizer(pair.target, add_special_tokens=False)["input_ids"][:max_length]
        encoded.append((list(prompt) + list(target) + [tokenizer.eos_token_id], len(prompt)))
    return encoded


def _batch(encoded: list[tuple[list[int], int]], pad_id: int, device: Any) -> dict[str, Any]:
    """Right-padded ids, mask and labels (-100 on the prompt and the padding)."""
    import torch

    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    for row, (ids, prompt_length) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
        labels[row, prompt_length : len(ids)] = torch.tensor(ids[prompt_length:])
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def _trainable_state(model: Any) -> dict[str, Any]:
    return {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}


def _load_state(model: Any, state: dict[str, Any]) -> None:
    import torch

    with torch.no_grad():
        for key, parameter in model.named_parameters():
            if key in state:
                parameter.copy_(state[key])


def _loop(model: Any, restyler: LocalRestyler, pairs: RestylePairs, config: TrainingConfig,
          settings: RestyleSettings, result: TrainingResult, run: Any, cancel: CancelToken,
          on_epoch: Callable[[dict[str, Any]], None] | None, run_dir: Path) -> dict[str, Any] | None:
    """The epochs, resumed after the last one saved in *run_dir*; the best epoch's trainable
    weights (None when cancelled)."""
    import random

    import torch

    tokenizer = restyler.tokenizer
    encoded = encode_pairs(tokenizer, pairs.train, settings.style, config.max_length)
    device = restyler.device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    per_epoch = math.ceil(len(encoded) / config.batch_size)
    steps = max(1, per_epoch * config.epochs // config.grad_accum)
    warmup = int(steps * config.warmup_ratio)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    autocast = device.type == "cuda" and config.mixed_precision != "no"
    dtype = torch.bfloat16 if autocast and torch.cuda.is_bf16_supported() else torch.float16
    rng = random.Random(config.seed)  # noqa: S311 - shuffling, not crypto
    best_score, best_state, waited, done = -math.inf, None, 0, 0
    first = 1
    state_path, best_path = run_dir / STATE_FILE, run_dir / "best.safetensors"
    if state_path.exists():  # an unfinished run of the same settings and pairs: continue after its last epoch
        saved = load_state(state_path)
        _load_state(model, saved["weights"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        rng.setstate(saved["rng"])
        torch.set_rng_state(saved["torch_rng"])
        if saved.get("cuda_rng") is not None and device.type == "cuda":  # dropout on the GPU draws from its own generator
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
        best_score, waited, done = saved["best_score"], saved["waited"], saved["done"]
        result.history, result.best_epoch = saved["history"], saved["best_epoch"]
        result.epochs_run = first = saved["epoch"]
        first += 1
        best_state = load_state(best_path)["weights"]
        if saved["stopped_early"]:
            result.stopped_early = True
            return best_state
    refs = [p.target for p in pairs.validation]
    for epoch in range(first, config.epochs + 1):
        model.train()
        order = list(range(len(encoded)))
        rng.shuffle(order)
        losses = []
        for index, start in enumerate(range(0, len(order), config.batch_size)):
            if cancel.is_set():
                result.cancelled = True
                return None
            batch = _batch([encoded[i] for i in order[start : start + config.batch_size]],
                           tokenizer.pad_token_id, device)
            with torch.autocast(device.type, dtype=dtype, enabled=autocast):
                loss = model(**batch).loss / config.grad_accum
            loss.backward()
            losses.append(float(loss) * config.grad_accum)
            if (index + 1) % config.grad_accum == 0 or start + config.batch_size >= len(order):
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            done += 1
            run.progress(done, per_epoch * config.epochs, f"Epoch {epoch}")
        metrics = caption_metrics(_restyle(restyler, pairs.validation, settings), refs)
        record = {"epoch": epoch, "loss": sum(losses) / max(1, len(losses)), **metrics}
        result.history.append(record)
        result.epochs_run = epoch
        if on_epoch is not None:
            on_epoch(record)
        score = selection_score(metrics)
        if score > best_score:
            best_score, best_state, waited, result.best_epoch = score, _trainable_state(model), 0, epoch
            save_state(best_path, {"weights": best_state})
        else:
            waited += 1
            result.stopped_early = bool(config.patience and waited >= config.patience)
        save_state(state_path, {
            "weights": _trainable_state(model), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "best_score": best_score, "waited": waited, "done": done, "history": result.history,
            "best_epoch": result.best_epoch, "epoch": epoch, "stopped_early": result.stopped_early})
        if result.stopped_early:
            break
    return best_state
