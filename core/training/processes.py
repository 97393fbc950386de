"""``captiondesk train --processes N``: start N training processes, one rank each.

:func:`train_in_processes` spawns the ranks (gloo on the CPU, one process per GPU with
NCCL on CUDA); each runs :func:`core.training.trainer.train` with a
:class:`~core.training.distributed.DistributedRun`.  Rank 0's progress, epoch records and
result come back to the caller, and the caller's cancel token goes to rank 0.  What a
rank does inside the loop is :mod:`core.training.distributed`'s business.
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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.jobs import NEVER_CANCELLED, CancelToken, ProgressCallback, no_progress

from .config import TrainingConfig
from .distributed import DistributedRun, check_processes, uses_cuda

if TYPE_CHECKING:
    from .trainer import TrainingResult

__all__ = ["train_in_processes"]

log = logging.getLogger(__name__)


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
    threads = 0 if uses_cuda(config) else max(1, (os.cpu_count() or 1) // processes)
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
