"""What every ``captiondesk`` command shares: exit codes, user errors, the progress bar,
Ctrl-C cancellation, opening the library, and printing a job's problems.

The command modules (:mod:`captiondesk.cli`'s own commands, :mod:`.dataset_commands`,
:mod:`.training_commands`, :mod:`.selfcheck_command`) import this module only; the
parser in :mod:`captiondesk.cli` imports them — so there is no import circle.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from core.jobs import Progress
    from core.library import Library

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Problems listed on stderr before "... and N more".
SHOWN_PROBLEMS = 10

T = TypeVar("T")


class UserError(Exception):
    """An error caused by the user's input: shown as one line, exit status 2."""


class ProgressBar:
    """A tqdm bar on a terminal; silent (summary only) when output is redirected."""

    def __init__(self, description: str, unit: str = "img") -> None:
        self._bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(desc=description, unit=unit, dynamic_ncols=True, leave=True)

    def __call__(self, progress: Progress) -> None:
        bar = self._bar
        if bar is None:
            return
        if progress.total is not None and bar.total != progress.total:
            bar.total = progress.total
        bar.n = progress.done
        postfix = {k: v for k, v in progress.counts.items() if v}
        if postfix:
            bar.set_postfix(postfix, refresh=False)
        bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def run_cancellable(job: Callable[[threading.Event], T]) -> tuple[T | None, bool]:
    """Run ``job(cancel)`` on a worker thread; Ctrl-C sets *cancel* and waits for it.

    Returns ``(result, interrupted)``.  The job decides how fast it stops (between
    batches); what it committed stays committed.
    """
    cancel = threading.Event()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = job(cancel)
        except BaseException as exc:  # re-raised on the main thread
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="captiondesk-job", daemon=True)
    worker.start()
    interrupted = False
    while worker.is_alive():
        try:
            worker.join(0.2)
        except KeyboardInterrupt:
            if interrupted:  # a second Ctrl-C: stop waiting
                raise
            interrupted = True
            cancel.set()
            print("\nStopping after the current batch (Ctrl-C again to quit now)...", file=sys.stderr)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result"), interrupted


def run_with_progress(
    description: str, job: Callable[[ProgressBar, threading.Event], T], unit: str = "img"
) -> tuple[T | None, bool]:
    """``job(progress, cancel)`` with a progress bar, cancellable by Ctrl-C (see
    :func:`run_cancellable`)."""
    bar = ProgressBar(description, unit=unit)
    try:
        return run_cancellable(lambda cancel: job(bar, cancel))
    finally:
        bar.close()


def library_path(args: argparse.Namespace) -> Path:
    """The library file ``--library`` names, else the default one."""
    from core.library import default_library_path

    return Path(args.library) if getattr(args, "library", None) else default_library_path()


def open_library(args: argparse.Namespace, *, reading: bool = False) -> Library:
    """The library ``--library`` names, else the default one.

    *reading* commands (status, export) open a library they cannot write read-only.
    """
    from core.library import Library

    return Library(library_path(args), read_only=None if reading else False)


def print_problems(problems: list[str], label: str = "warning") -> None:
    """The first :data:`SHOWN_PROBLEMS` problems on stderr, then how many more there are."""
    for problem in problems[:SHOWN_PROBLEMS]:
        print(f"  {label}: {problem}", file=sys.stderr)
    if len(problems) > SHOWN_PROBLEMS:
        print(f"  ... and {len(problems) - SHOWN_PROBLEMS} more {label}s", file=sys.stderr)
