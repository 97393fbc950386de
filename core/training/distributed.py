"""Training in several processes (data parallel) through Hugging Face ``accelerate``.

Two ways in, one loop (:class:`core.training.trainer._TrainingLoop`):

* ``captiondesk train --processes N`` → :func:`train_in_processes` starts N processes
  (``spawn``; gloo on the CPU, one process per GPU with NCCL on CUDA), forwards rank 0's
  progress, epoch records and result to the caller, and the caller's cancel token to
  rank 0.
* ``accelerate launch -m captiondesk train ...`` (or ``torchrun``): every process runs
  the CLI; :func:`launched_world_size` sees ``WORLD_SIZE`` and the CLI builds a
  :class:`DistributedRun` from the environment.

What stays the same as one process: the *global* batch.  Each micro-batch of
``batch_size`` examples (the same shuffled order, from the same seed) is cut into N
contiguous shards, one per rank; each rank's mean loss is weighted by its share of the
micro-batch and the gradients are summed over the ranks, so the update is the one a
single process computes on the whole micro-batch (exactly so when every example has the
same number of caption tokens; otherwise per-example instead of per-token weighting).
The gradients are all-reduced explicitly (:meth:`DistributedRun.sync_gradients`), once
per optimiser step, rather than by wrapping the model in DDP: the families' losses call
sub-modules of the transformers model (e.g. BLIP's ``text_decoder`` with cached vision
embeddings), which a DDP wrapper's ``forward`` never sees.

Only rank 0 (``is_main``) evaluates, keeps the best checkpoint, writes the run folder, and
writes to the library (job record, model version); the other ranks open the library
read-only and receive each evaluation's metrics from rank 0, so every rank takes the same
early-stopping decisions.  Cancel: rank 0's token is broadcast at every micro-batch.

This module imports accelerate and torch only inside functions; a single-process run
never imports it.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import signal
import socket
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.jobs import NEVER_CANCELLED, CancelToken, ProgressCallback, no_progress

from .config import TrainingConfig

if TYPE_CHECKING:
    from .trainer import TrainingResult

__all__ = ["DistributedRun", "check_processes", "launched_world_size", "train_in_processes"]

log = logging.getLogger(__name__)

#: How long a rank waits for the others at a barrier (rank 0 evaluates while they wait).
BARRIER_TIMEOUT = timedelta(hours=6)


def launched_world_size() -> int:
    """How many processes a launcher (``accelerate launch``, ``torchrun``) started: ``$WORLD_SIZE``, else 1."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def _uses_cuda(config: TrainingConfig) -> bool:
    device = str(config.device)
    if device.startswith("cuda"):
        return True
    if device != "auto":
        return False
    import torch

    return torch.cuda.is_available()


def check_processes(config: TrainingConfig, processes: int) -> None:
    """Refuse a process count the run cannot use (a ``ValueError`` naming what to change)."""
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"--processes must be an integer >= 1, got {processes!r}")
    if processes == 1:
        return
    if config.method == "qlora":
        raise ValueError("--processes > 1 does not support --method qlora (its 4-bit base is placed by bitsandbytes); "
                         "use --method lora or one process")
    if str(config.device) == "mps":
        raise ValueError("--processes > 1 is not supported on Apple GPUs (mps); use one process")
    if str(config.device).startswith("cuda:"):
        raise ValueError("--processes > 1 uses one GPU per process: give --device cuda or auto, not one GPU")
    if config.batch_size < processes:
        raise ValueError(f"--processes {processes} needs --batch-size >= {processes} (each process takes a share "
                         f"of every batch; got {config.batch_size})")
    if _uses_cuda(config):
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus == 0:
            raise ValueError("--device cuda was asked for but no CUDA GPU is available")
        if processes > gpus:
            raise ValueError(f"--processes {processes} needs {processes} GPUs (one per process); "
                             f"this machine has {gpus}")


class DistributedRun:
    """This process's place in a multi-process run, and the collectives the loop uses.

    Built by :meth:`from_environment` once the launcher's variables (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) are set.
    """

    def __init__(self, accelerator: Any) -> None:
        self.accelerator = accelerator
        self.rank: int = accelerator.process_index
        self.world_size: int = accelerator.num_processes
        self.is_main: bool = accelerator.is_main_process
        self.device: Any = accelerator.device

    @classmethod
    def from_environment(cls, config: TrainingConfig) -> DistributedRun:
        """An ``accelerate.Accelerator`` on gloo (CPU) or NCCL (one GPU per process), from the environment."""
        from accelerate import Accelerator
        from accelerate.utils import InitProcessGroupKwargs

        accelerator = Accelerator(cpu=not _uses_cuda(config),
                                  kwargs_handlers=[InitProcessGroupKwargs(timeout=BARRIER_TIMEOUT)])
        if accelerator.num_processes < 2:
            raise ValueError("a distributed run needs WORLD_SIZE >= 2 (start it with --processes N or accelerate launch)")
        return cls(accelerator)

    def training_device(self) -> str:
        """The device this rank trains on (``cpu`` or its own ``cuda:N``)."""
        return "cpu" if self.device.type == "cpu" else str(self.device)  # accelerate says "cpu:0"

    # -- collectives ---------------------------------------------------------------------

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    def share(self, value: Any) -> Any:
        """Rank 0's *value*, on every rank (pickled; for small things such as metrics)."""
        from accelerate.utils import broadcast_object_list

        box = [value if self.is_main else None]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def stop_requested(self, cancel: CancelToken) -> bool:
        """Rank 0's cancel token, on every rank (so all ranks stop at the same micro-batch)."""
        import torch
        from accelerate.utils import broadcast

        flag = torch.tensor([1 if self.is_main and cancel.is_set() else 0], device=self.device)
        return bool(broadcast(flag, from_process=0).item())

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of *values* over the ranks."""
        import torch

        if not values:
            return []
        total = self.accelerator.reduce(torch.tensor(values, dtype=torch.float64, device=self.device), reduction="sum")
        return [float(v) for v in total.cpu()]

    def sync_gradients(self, params: list[Any]) -> None:
        """Sum every trainable parameter's gradient over the ranks.

        A parameter no rank computed a gradient for keeps ``grad=None`` (the optimiser
        skips it, as with one process); one that only some ranks reached (e.g. a rank with
        no examples in a short last batch) counts as zeros on the others.
        """
        import torch
        import torch.distributed as dist

        reached = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=self.device)
        dist.all_reduce(reached, op=dist.ReduceOp.MAX)
        grads = []
        for p, any_rank in zip(params, reached.tolist(), strict=True):
            if not any_rank:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        # Bucketed like DDP: a few large messages instead of one per tensor.
        bucket: list[Any] = []
        size = 0
        for g in [*grads, None]:
            if g is not None:
                bucket.append(g)
                size += g.numel()
            if bucket and (g is None or size >= 8_000_000):
                flat = torch.cat([b.reshape(-1) for b in bucket])
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
                offset = 0
                for b in bucket:
                    b.copy_(flat[offset : offset + b.numel()].view_as(b))
                    offset += b.numel()
                bucket, size = [], 0

    def sync_parameters(self, params: list[Any]) -> None:
        """Every rank starts from rank 0's trainable weights."""
        import torch
        import torch.distributed as dist

        with torch.no_grad():
            for p in params:
                dist.broadcast(p.data, src=0)

    def close(self) -> None:
        self.accelerator.end_training()


# --------------------------------------------------------------------------- captiondesk train --processes N


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _portable_error(exc: BaseException) -> BaseException:
    """*exc* if it survives pickling (to cross to the parent), else a TrainingError with its message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any pickling failure: send the message
        from .trainer import TrainingError

        return TrainingError(str(exc))


def _parent_quiet() -> tuple[dict[str, int], list[Any]]:
    """The caller's logger levels and warning filters, for the ranks to log and warn alike
    (e.g. the CLI keeps third-party notices off a redirected stderr)."""
    import warnings

    levels = {name: logger.level for name, logger in logging.root.manager.loggerDict.items()
              if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET}
    try:
        filters = pickle.loads(pickle.dumps(list(warnings.filters)))
    except Exception:  # noqa: BLE001 - a filter that cannot cross processes: keep the defaults
        filters = []
    return levels, filters


def _apply_quiet(quiet: tuple[dict[str, int], list[Any]]) -> None:
    import warnings

    levels, filters = quiet
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    if filters:
        warnings.filters[:] = filters


def _stop_when_orphaned(stop: Any) -> None:
    """Cancel the run (at the next micro-batch, resumable) if the process that started the ranks dies."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        stop.set()

    threading.Thread(target=watch, name="captiondesk-parent-watch", daemon=True).start()


def _worker(rank: int, world_size: int, port: int, library_path: str, base_model: str, name: str,
            config: dict[str, Any], events: Any, stop: Any, threads: int, quiet: tuple[dict[str, int], list[Any]]) -> None:
    """One rank of :func:`train_in_processes` (a spawned process)."""
    _apply_quiet(quiet)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(world_size)})
    if threads:  # N processes share the CPU cores (set before torch starts its thread pool)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    interrupts = [0]

    def on_sigint(_signum: int, _frame: Any) -> None:
        # Ctrl-C reaches every process of the terminal's group: the first asks rank 0 (through
        # the shared event) to stop all ranks at the next micro-batch; a second quits now.
        interrupts[0] += 1
        stop.set()
        if interrupts[0] > 1:
            os._exit(130)

    signal.signal(signal.SIGINT, on_sigint)
    if hasattr(signal, "SIGHUP"):
        # A closed terminal hangs up its whole process group, ranks included.  SIGTERM keeps
        # its default: the parent terminates a rank stuck behind a failed one with it.
        signal.signal(signal.SIGHUP, on_sigint)
    _stop_when_orphaned(stop)
    try:
        import torch

        if threads:
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        from core.library import Library

        from .trainer import train

        training_config = TrainingConfig.from_dict(config)
        run = DistributedRun.from_environment(training_config)
        # Rank 0 writes (job record, version); the others only read, opened after rank 0
        # so they never see a library being created or migrated.
        if run.is_main:
            library = Library(library_path)
            run.barrier()
        else:
            run.barrier()
            library = Library(library_path, read_only=True)
        try:
            if run.is_main:
                result = train(library, base_model, name, training_config, distributed=run, cancel=stop,
                               progress=lambda p: events.put(("progress", p)),
                               on_epoch=lambda record: events.put(("epoch", record)))
                events.put(("result", result))
            else:
                train(library, base_model, name, training_config, distributed=run, cancel=NEVER_CANCELLED)
        finally:
            library.close()
        run.close()
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the caller, which raises it
        # The caller raises it (one error, not one traceback per rank); it stops the other ranks.
        events.put(("error", (rank, _portable_error(exc))))
        events.close()
        events.join_thread()  # sent before this process ends
        sys.exit(1)


def train_in_processes(
    library_path: Path | str,
    base_model: str,
    name: str,
    config: TrainingConfig,
    processes: int,
    *,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken = NEVER_CANCELLED,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainingResult:
    """:func:`core.training.train` in *processes* data-parallel processes; rank 0's result.

    The library at *library_path* must exist (open it once first: that migrates it).  Rank
    0's progress and epoch records are passed to *progress* / *on_epoch* here; setting
    *cancel* stops every rank at the next micro-batch (the run stays resumable, as with one
    process).  Errors from rank 0 are raised here as they were raised there.
    """
    import multiprocessing as mp

    check_processes(config, processes)
    context = mp.get_context("spawn")  # fork after torch/threads is unsafe
    events = context.Queue()
    stop = context.Event()
    threads = 0 if _uses_cuda(config) else max(1, (os.cpu_count() or 1) // processes)
    port = _free_port()
    workers = [context.Process(target=_worker, name=f"captiondesk-train-{rank}",
                               args=(rank, processes, port, str(library_path), base_model, name, config.to_dict(),
                                     events, stop, threads, _parent_quiet()))
               for rank in range(processes)]
    for worker in workers:
        worker.start()
    result: Any = None
    error: BaseException | None = None
    try:
        while True:
            if cancel.is_set():
                stop.set()
            try:
                kind, payload = events.get(timeout=0.2)
            except queue.Empty:
                if result is not None or error is not None or any(
                        w.exitcode not in (None, 0) for w in workers) or all(w.exitcode is not None for w in workers):
                    break
                continue
            if kind == "progress":
                progress(payload)
            elif kind == "epoch" and on_epoch is not None:
                on_epoch(payload)
            elif kind == "result":
                result = payload
            elif kind == "error":
                # Every rank usually fails alike (a bad name, a missing model); report rank 0's.
                failed_rank, failure = payload
                if error is None or failed_rank == 0:
                    error = failure
        if error is None and result is not None:
            for worker in workers:  # the others finish their last barrier
                worker.join(timeout=600)
    finally:
        for worker in workers:
            if worker.is_alive() and (error is not None or result is None):
                worker.terminate()  # a rank stuck waiting for a failed rank 0
            worker.join()
        events.close()
    if error is not None:
        raise error
    if result is None:
        from .trainer import TrainingError

        codes = ", ".join(f"rank {i}: {w.exitcode}" for i, w in enumerate(workers))
        raise TrainingError(f"a training process died without a result ({codes}); see the messages above")
    if any(w.exitcode not in (0, None) for w in workers):
        log.warning("a training process ended with an error after rank 0 finished (exit codes %s)",
                    ", ".join(str(w.exitcode) for w in workers))
    return result
