"""Run a library scan in a child process (what the desktop app does).

A scan of a large folder is Python-heavy (walking, stat, fingerprint bookkeeping,
building rows).  In the GUI process it would compete for the GIL with every repaint and
stall the window during a large scan (see docs/optimization-notes.md, "Scanning in a
child process").  In a child process it costs the window nothing but CPU time.

:func:`scan_in_subprocess` has the same contract as :meth:`core.library.Library.scan`
(``progress``, ``cancel``, returns :class:`~core.scanner.ScanStats`): the child writes
one JSON object per line to stdout (``progress``, then ``stats`` or ``error``) and
stops after the current batch when its stdin says ``cancel`` or closes — so closing the
app never leaves an orphan scan behind.  Everything it committed stays committed, as
with an in-process scan; SQLite's WAL and ``BEGIN IMMEDIATE`` keep the two processes'
writes apart.

The child is ``python -m core.scan_process LIBRARY [ROOT_ID ...]`` (in a frozen build,
the app binary with the hidden ``_scan-worker`` command).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import IO, Any

from core.jobs import NEVER_CANCELLED, CancelToken, Progress, ProgressCallback, no_progress

__all__ = ["ScanProcessError", "scan_in_subprocess", "worker_command"]

#: Hidden CLI command a frozen build uses to start the worker.
FROZEN_COMMAND = "_scan-worker"


class ScanProcessError(Exception):
    """The scan process failed (its message says why)."""


def worker_command(library_path: Path | str, root_ids: Sequence[int] | None) -> list[str]:
    """The command line that scans *library_path* in a child process."""
    ids = [str(int(i)) for i in root_ids or []]
    if getattr(sys, "frozen", False):  # PyInstaller: the executable is the app itself
        return [sys.executable, FROZEN_COMMAND, str(library_path), *ids]
    return [sys.executable, "-m", "core.scan_process", str(library_path), *ids]


class _CancelSender:
    """Tells the child to stop, once: from the watcher thread or right after a progress line."""

    def __init__(self, stdin: IO[str]) -> None:
        self._stdin = stdin
        self._lock = threading.Lock()
        self._sent = False

    def send(self) -> None:
        with self._lock:
            if self._sent:
                return
            self._sent = True
            try:
                self._stdin.write("cancel\n")
                self._stdin.flush()
            except (OSError, ValueError):  # the child already exited
                pass


def _watch_cancel(cancel: CancelToken, sender: _CancelSender, done: threading.Event) -> None:
    # Covers cancels while the child reports nothing (a long walk of a slow disk).
    while not done.wait(0.1):
        if cancel.is_set():
            sender.send()
            return


def scan_in_subprocess(
    library_path: Path | str,
    root_ids: Sequence[int] | None = None,
    *,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken = NEVER_CANCELLED,
    env: dict[str, str] | None = None,
) -> Any:  # -> ScanStats
    """Scan the library at *library_path* in a child process; see the module docstring.

    Raises:
        ScanProcessError: the child could not start, crashed, or reported an error
            (e.g. a library that cannot be opened).
    """
    from core.scanner import ScanStats

    creationflags = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # no console flash on Windows
    try:
        child = subprocess.Popen(
            worker_command(library_path, root_ids),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=env,
            creationflags=creationflags,
        )
    except OSError as exc:
        raise ScanProcessError(f"cannot start the scan process: {exc}") from exc
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    done = threading.Event()
    sender = _CancelSender(child.stdin)
    watcher = threading.Thread(target=_watch_cancel, args=(cancel, sender, done), daemon=True)
    watcher.start()
    stats: ScanStats | None = None
    error: str | None = None
    stderr_lines: list[str] = []
    drain = threading.Thread(target=lambda: stderr_lines.extend(child.stderr), daemon=True)
    drain.start()
    try:
        for line in child.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue  # a stray print from a library; not ours
            if "progress" in message:
                p = message["progress"]
                progress(Progress(p["done"], p.get("total"), p.get("message", ""), p.get("counts", {}),
                                  p.get("rate")))
                if cancel.is_set():  # often set by that very callback: stop the child now
                    sender.send()
            elif "stats" in message:
                known = {f.name for f in fields(ScanStats)}
                stats = ScanStats(**{k: v for k, v in message["stats"].items() if k in known})
            elif "error" in message:
                error = message["error"]
    finally:
        done.set()
        try:
            child.stdin.close()  # also tells a still-running child to stop
        except OSError:
            pass
        child.wait()
        drain.join(timeout=5)
    if error is not None:
        raise ScanProcessError(error)
    if stats is None:
        tail = "".join(stderr_lines).strip().splitlines()[-1:] or [f"exit status {child.returncode}"]
        raise ScanProcessError(f"the scan process stopped unexpectedly ({tail[0]})")
    return stats


# --------------------------------------------------------------------------- child side


def _emit(out: IO[str], lock: threading.Lock, message: dict[str, Any]) -> None:
    with lock:
        out.write(json.dumps(message) + "\n")
        out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point: scan, reporting on stdout; stop when stdin says so."""
    args = list(sys.argv[1:] if argv is None else argv)
    out, lock = sys.stdout, threading.Lock()
    if not args:
        _emit(out, lock, {"error": "usage: python -m core.scan_process LIBRARY [ROOT_ID ...]"})
        return 2
    if hasattr(os, "nice"):  # a scan is background work: the interactive app goes first
        try:
            os.nice(10)
        except OSError:
            pass
    cancel = threading.Event()

    def watch_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "cancel":
                break
        cancel.set()  # "cancel", or the parent went away (EOF)

    threading.Thread(target=watch_stdin, daemon=True).start()
    try:
        from core.library import Library

        root_ids = [int(a) for a in args[1:]] or None
        with Library(args[0]) as library:
            stats = library.scan(
                root_ids,
                progress=lambda p: _emit(out, lock, {"progress": {"done": p.done, "total": p.total,
                                                                  "message": p.message, "counts": p.counts,
                                                                  "rate": p.rate}}),
                cancel=cancel,
            )
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        _emit(out, lock, {"error": str(exc) or type(exc).__name__})
        return 1
    _emit(out, lock, {"stats": asdict(stats)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
