"""Training in several processes (data parallel) through Hugging Face ``accelerate``.

Two ways in, one loop (:class:`core.training.loop._TrainingLoop`):

* ``captiondesk train --processes N`` → :func:`core.training.processes.train_in_processes` starts N processes
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
from datetime import timedelta
from typing import Any

from core.jobs import CancelToken

from .config import TrainingConfig

__all__ = ["DistributedRun", "check_processes", "launched_world_size"]

log = logging.getLogger(__name__)

#: How long a rank waits for the others at a barrier (rank 0 evaluates while they wait).
BARRIER_TIMEOUT = timedelta(hours=6)


def launched_world_size() -> int:
    """How many processes a launcher (``accelerate launch``, ``torchrun``) started: ``$WORLD_SIZE``, else 1."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def uses_cuda(config: TrainingConfig) -> bool:
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
    if uses_cuda(config):
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

        accelerator = Accelerator(cpu=not uses_cuda(config),
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
