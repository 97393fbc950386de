"""What every ``captiondesk`` command shares: exit codes, user errors, the progress bar,
Ctrl-C cancellation, opening the library, printing a job's problems, ``--json`` output
and quieting third-party output.

The command modules (:mod:`captiondesk.cli`'s own commands, :mod:`.dataset_commands`,
:mod:`.training_commands`, :mod:`.selfcheck_command`) import this module only; the
parser in :mod:`captiondesk.cli` imports them — so there is no import circle.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from core.errors import UserFacingError

if TYPE_CHECKING:
    from core.jobs import Progress
    from core.library import Library

# One scheme for every command (README "Command line", ``captiondesk --help``).
#: Everything asked for was done.
EXIT_OK = 0
#: The command ran to the end, but some items failed (the summary's error count).
EXIT_FAILED = 1
#: Bad arguments or a user error (a missing folder, an unknown model...): nothing done.
EXIT_USAGE = 2
#: A runtime failure the user did not cause (the library file or disk failed mid-way).
EXIT_RUNTIME = 3
#: Stopped by Ctrl-C, SIGTERM or SIGHUP (128 + SIGINT, as shells report Ctrl-C); committed
#: work is kept.
EXIT_INTERRUPTED = 130
#: The reader of stdout went away (``captiondesk models list | head -1``): 128 + SIGPIPE,
#: the status a shell reports for any program stopped that way.
EXIT_BROKEN_PIPE = 141

EXIT_CODES_HELP = (
    "exit status: 0 all done; 1 done, but some items failed; 2 bad arguments or user error "
    "(nothing done); 3 runtime failure (library file or disk); 130 interrupted by Ctrl-C, "
    "SIGTERM or SIGHUP (work committed so far is kept); 141 stdout's reader went away (| head)."
)

#: When this command started (``--json``'s "seconds" for jobs that do not time themselves).
COMMAND_STARTED = time.monotonic()

#: Problems listed on stderr before "... and N more".
SHOWN_PROBLEMS = 10
#: Unreadable photos a scan names on stderr before "... and N more" (``--json`` has all).
SHOWN_UNREADABLE = 20

T = TypeVar("T")


class UserError(UserFacingError):
    """An error caused by the user's input: shown as one line, exit status 2 (as every
    :class:`~core.errors.UserFacingError` a command lets through)."""


#: Seconds between plain progress lines when stderr is not a terminal (logs, pipes).
PROGRESS_INTERVAL_ENV = "CAPTIONDESK_PROGRESS_INTERVAL"
DEFAULT_PROGRESS_INTERVAL = 30.0


class ProgressBar:
    """A tqdm bar on a terminal; when stderr is redirected, a plain line such as
    ``Captioning: 40/120 img (captioned 38, errors 2)`` at most every
    ``$CAPTIONDESK_PROGRESS_INTERVAL`` seconds (default 30), so logs show a job is alive."""

    def __init__(self, description: str, unit: str = "img") -> None:
        self._bar = None
        self._description = description
        self._unit = unit
        try:
            self._interval = float(os.environ.get(PROGRESS_INTERVAL_ENV, DEFAULT_PROGRESS_INTERVAL))
        except ValueError:
            self._interval = DEFAULT_PROGRESS_INTERVAL
        # The first plain line after one interval too: a command that fails or ends
        # quickly prints only its one result or error line.
        self._next_line = time.monotonic() + self._interval
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(desc=description, unit=unit, dynamic_ncols=True, leave=True)

    def __call__(self, progress: Progress) -> None:
        bar = self._bar
        if bar is None:
            self._plain_line(progress)
            return
        if progress.total is not None and bar.total != progress.total:
            bar.total = progress.total
        bar.n = progress.done
        postfix = {k: v for k, v in progress.counts.items() if v}
        if postfix:
            bar.set_postfix(postfix, refresh=False)
        bar.refresh()

    def _plain_line(self, progress: Progress) -> None:
        now = time.monotonic()
        if now < self._next_line:
            return
        self._next_line = now + self._interval
        total = f"/{progress.total}" if progress.total is not None else ""
        counts = ", ".join(f"{key} {value}" for key, value in progress.counts.items())
        print(f"{self._description}: {progress.done}{total} {self._unit}" + (f" ({counts})" if counts else ""),
              file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


#: The signals that stop a command the way Ctrl-C does: a service manager's or ``kill``'s
#: SIGTERM and a closed terminal's SIGHUP (not on Windows).
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextmanager
def _stop_signal_handler(
    handler: Callable[[int, Any], None], signums: Sequence[signal.Signals] = STOP_SIGNALS
) -> Iterator[None]:
    """Use *handler* for *signums* (every :data:`STOP_SIGNALS` by default) inside the block
    (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in _stop_signals_heard(signums)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _stop_signals_heard(signums: Sequence[signal.Signals]) -> list[signal.Signals]:
    """*signums* less a SIGTERM or SIGHUP this process was started ignoring (``nohup``)."""
    return [signum for signum in signums
            if signum == signal.SIGINT or signal.getsignal(signum) is not signal.SIG_IGN]


def _raise_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM and SIGHUP raise ``KeyboardInterrupt`` as Ctrl-C does, so the
    command's one Ctrl-C path (a job's cancel, else "Interrupted." and status 130) handles
    them too instead of the process dying without a summary."""
    with _stop_signal_handler(_raise_interrupt, [signum for signum in STOP_SIGNALS if signum != signal.SIGINT]):
        yield


def _tell(text: str) -> None:
    """A line on stderr from a signal handler; a closed terminal (SIGHUP) must not stop the stop."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def run_cancellable(job: Callable[[threading.Event], T]) -> tuple[T | None, bool]:
    """Run ``job(cancel)`` on a worker thread; Ctrl-C (or SIGTERM, SIGHUP) sets *cancel* and
    waits for it.

    Returns ``(result, interrupted)``.  The job decides how fast it stops (between
    batches); what it committed stays committed.  A second signal quits at once with
    status 130 (``os._exit``): each batch is one database transaction, so the batch in
    flight is rolled back and every committed one is kept.

    Ctrl-C is a SIGINT handler that only sets *cancel*, not a ``KeyboardInterrupt``
    caught around ``Thread.join``: on Python 3.11/3.12 an interrupted ``join(timeout)``
    can make ``is_alive()`` False while the thread still runs (CPython gh-90882), and the
    process then exits under a running torch thread ("terminate called without an
    active exception", SIGABRT).  The main thread therefore waits on an event the
    worker sets, never on the thread's own lock.
    """
    cancel = threading.Event()
    finished = threading.Event()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = job(cancel)
        except BaseException as exc:  # re-raised on the main thread
            outcome["error"] = exc
        finally:
            finished.set()

    def on_stop_signal(signum: int, _frame: Any) -> None:
        again = "Ctrl-C again" if signum == signal.SIGINT else f"{signal.Signals(signum).name} again"
        if not cancel.is_set():
            cancel.set()
            _tell(f"\nStopping after the current batch ({again} to quit now; finished batches are kept)...")
            return
        _tell("\nQuitting now; finished batches are kept.")
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        os._exit(EXIT_INTERRUPTED)

    worker = threading.Thread(target=target, name="captiondesk-job", daemon=True)
    with _stop_signal_handler(on_stop_signal):
        worker.start()
        while not finished.wait(0.2):
            pass
    worker.join()  # returns at once: the job is over
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result"), cancel.is_set()


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


def may_create_library(args: argparse.Namespace) -> bool:
    """Whether this command may create a library file that does not exist yet.

    The one rule: only a command that adds folders — ``add``, and ``caption FOLDER...``
    (the README's first-run command) — starts a new library.  Every other command reads
    or changes an existing one, so a missing file is a mistyped ``--library`` (or
    ``$CAPTIONDESK_LIBRARY``), not a wish for a new empty library.
    """
    command = getattr(args, "command", None)
    return command == "add" or (command == "caption" and bool(getattr(args, "folders", None)))


def open_library(args: argparse.Namespace, *, reading: bool = False) -> Library:
    """The library ``--library`` names, else the default one.

    *reading* commands (status, export) open a library they cannot write read-only.
    A library file that does not exist is a :class:`UserError` unless the command may
    create one (:func:`may_create_library`); a path that is a folder is one too.
    """
    from core.library import Library

    path = library_path(args)
    named = str(getattr(args, "library", None) or "")
    # "new/" names a folder even before it exists (Path() drops the slash: it would become a file).
    if path.is_dir() or named.endswith(("/", os.sep)):
        raise UserError(f"--library {path} names a folder; name the library file inside it, e.g. {path / 'library.db'}")
    if not path.exists() and not may_create_library(args):
        named = f" --library {_quoted(path)}" if getattr(args, "library", None) or _library_from_environment() else ""
        raise UserError(f"no library at {path} (create one with: captiondesk add FOLDER{named})")
    return Library(path, read_only=None if reading else False)


def _library_from_environment() -> bool:
    from core.library import ENV_LIBRARY

    return bool(os.environ.get(ENV_LIBRARY))


def _quoted(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))


def print_problems(problems: list[str], label: str = "warning", shown: int = SHOWN_PROBLEMS,
                   plural: str | None = None) -> None:
    """The first *shown* problems on stderr, then how many more there are."""
    for problem in problems[:shown]:
        print(f"  {label}: {problem}", file=sys.stderr)
    if len(problems) > shown:
        print(f"  ... and {len(problems) - shown} more {plural or label + 's'}", file=sys.stderr)


def print_scan_problems(stats: Any) -> None:
    """A scan's warnings, then the photos it counted as unreadable (the first :data:`SHOWN_UNREADABLE`)."""
    print_problems(stats.problems)
    print_problems(stats.unreadable, "unreadable", SHOWN_UNREADABLE, "unreadable")


# -- exit status and --json -----------------------------------------------------------


def failed_items(stats: Any) -> int:
    """How many items a finished job could not process (its ``errors`` counter)."""
    return int(stats.counts().get("errors", 0)) if hasattr(stats, "counts") else 0


def job_exit_code(stats: Any, interrupted: bool) -> int:
    """130 if the job was stopped, 1 if some items failed, else 0 (see :data:`EXIT_CODES_HELP`)."""
    if interrupted or stats is None or getattr(stats, "cancelled", False):
        return EXIT_INTERRUPTED
    return EXIT_FAILED if failed_items(stats) else EXIT_OK


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true",
        help="print one JSON object on stdout instead of the human summary (progress stays on stderr)",
    )


def wants_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def say(args: argparse.Namespace, text: str) -> None:
    """A human line: stdout normally, stderr under ``--json`` (stdout holds only the JSON)."""
    print(text, file=sys.stderr if wants_json(args) else sys.stdout)


def emit_json(payload: dict[str, Any]) -> None:
    """The one JSON object a ``--json`` command prints on stdout."""
    json.dump(payload, sys.stdout, ensure_ascii=False, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


def job_payload(command: str, stats: Any, interrupted: bool, seconds: float | None = None,
                **extra: Any) -> dict[str, Any]:
    """The ``--json`` object of a job: exit code, job id, cancelled, counts, problems, seconds
    (the job's own time when it measures it, else the command's wall time so far)."""
    code = job_exit_code(stats, interrupted)
    payload: dict[str, Any] = {
        "command": command,
        "exit_code": code,
        "job_id": getattr(stats, "job_id", 0) or None,
        "cancelled": code == EXIT_INTERRUPTED,
        "counts": stats.counts() if stats is not None else {},
        "failed": failed_items(stats) if stats is not None else 0,
        "problems": list(getattr(stats, "problems", []) or []) if stats is not None else [],
        "summary": stats.summary() if stats is not None else None,
    }
    if seconds is None and stats is not None:
        seconds = getattr(stats, "seconds", None)
    if seconds is None:
        seconds = time.monotonic() - COMMAND_STARTED
    payload["seconds"] = round(seconds, 3) if seconds is not None else None
    payload.update(extra)
    return payload


def finish_job(args: argparse.Namespace, command: str, stats: Any, interrupted: bool, human: Callable[[], None],
               *, seconds: float | None = None, **extra: Any) -> int:
    """Print a job's outcome (``human()`` or the ``--json`` object) and return its exit code."""
    if wants_json(args):
        emit_json(job_payload(command, stats, interrupted, seconds, **extra))
    else:
        human()
    return job_exit_code(stats, interrupted)


# -- third-party output ---------------------------------------------------------------


def quiet_third_party(verbose: bool) -> None:
    """Keep other libraries' progress bars, notices and warnings off a redirected stderr.

    transformers' "Loading weights" bar, huggingface_hub downloads, bitsandbytes' kernel
    notice and Python warnings are noise in a log or a pipe; on a terminal (or with
    ``--verbose``) they stay.  Set before those libraries are imported (they read the
    environment on import); the CLI process is the only one affected.  The hub-kernels
    notices (:func:`quiet_kernel_notices`) are silenced on a terminal too.
    """
    if verbose:
        return
    quiet_kernel_notices()
    if sys.stderr.isatty():
        return
    import logging
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")
    # huggingface_hub sets its own loggers' level when imported (after this), so the
    # logger levels below do not reach its "Retrying in 1s" lines: its variable does.
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    warnings.filterwarnings("ignore")
    for name in ("transformers", "huggingface_hub", "bitsandbytes", "peft", "torch", "accelerate", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # already imported: switch it off directly
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


#: Where the Hugging Face hub-kernels layer (the ``kernels`` package, reached through
#: transformers and peft) reports; it says "Skipping publisher trust check for
#: 'kernels-community/…'" on every model load, which tells the user nothing they can act on.
KERNEL_LOGGERS = ("kernels", "transformers.integrations.hub_kernels")


def quiet_kernel_notices() -> None:
    """Silence the hub-kernels notices below errors, from its loggers and as Python warnings."""
    import logging
    import warnings

    for name in KERNEL_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*publisher trust check")
