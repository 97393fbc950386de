"""The training loop (:class:`_TrainingLoop`): AdamW with warm-up and cosine decay,
gradient accumulation and clipping, evaluation after every epoch, early stopping, the
best checkpoint, and the run state saved after every epoch for a resume."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.captioning.families import ModelFamily
from core.jobs import CancelToken

from .config import TrainingConfig
from .examples import _eval_settings, _Examples
from .metrics import kind_metrics, selection_score
from .model_setup import _load_trainable_state, _trainable_state
from .result import Report, TrainingError, TrainingResult
from .run_folder import _unusable_run
from .run_state import STATE_FILE, RunStateError, load_state, save_state

if TYPE_CHECKING:
    from .distributed import DistributedRun
    from .model_setup import _PreparedModel

def _schedule(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _micro_batch(captioner: Any, family: ModelFamily, ex: _Examples, idx: Any, device: Any) -> dict[str, Any]:
    """The training examples *idx* (a tensor of rows) as one batch on *device* (cached vision when there is some)."""
    text = {key: value[idx] for key, value in ex.text.items()}
    if ex.embeds is not None:
        batch = family.training_batch(captioner, text, None, ex.embeds[idx])
    else:
        batch = family.training_batch(captioner, text, [ex.images[i] for i in idx.tolist()], None)
    return {key: value.to(device) if hasattr(value, "to") else value for key, value in batch.items()}


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
        return kind_metrics(self.last_predictions, self.examples.refs, self.config.kind)

    def calibrate(self) -> Any:
        """The confidence calibration of the current weights: how each token scores in their
        captions of the validation split, and the error model those captions allow
        (core/captioning/confidence.py, core/captioning/calibration.py)."""
        import dataclasses

        from core.captioning.calibration import PHOTO_FEATURES, fit_error_model
        from core.captioning.confidence import TokenCalibration, caption_scores

        from .metrics import edit_rates

        self.model.trainable.eval()
        results = [r for batch, settings in self.examples.val_batches
                   for r in self.captioner.generate(batch, settings)]
        tokens = TokenCalibration.fit(results)
        measured = self.examples.val_photo_features
        if len(measured) != len(results):
            return tokens
        finish = self.examples.plan.finish if self.examples.plan is not None else (lambda text: text)
        rows = [{**caption_scores(r), **dict(zip(PHOTO_FEATURES, m, strict=True))}
                for r, m in zip(results, measured, strict=True)]
        rates = edit_rates([finish(r.text) for r in results], self.examples.refs)
        return dataclasses.replace(tokens, error_model=fit_error_model(rows, rates))

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
        return _micro_batch(self.captioner, self.family, self.examples, idx, self.device)

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
            score = selection_score(metrics, config.select_by)
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
