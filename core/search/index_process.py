"""Run the search index job in a child process (what the desktop app does).

Loading torch and transformers and tokenizing hold the GIL for hundreds of milliseconds at
a time; on a worker thread of the window that stalls every repaint (README, "Search by
meaning").  In a child process the index costs the window only CPU time.  The protocol
is the scan worker's (:mod:`core.scan_process`): JSON lines on stdout (``progress``, then
``stats`` or ``error``), ``cancel`` or EOF on stdin stops it after the current batch, and
every committed batch stays.  A frozen build runs the job in-process.

The child is ``python -m core.search.index_process LIBRARY SPACE [MODEL]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from core.jobs import NEVER_CANCELLED, CancelToken, Progress, ProgressCallback, no_progress
from core.scan_process import _CancelSender, _emit, _watch_cancel
from core.search.index_job import IndexStats, update_index


class IndexProcessError(Exception):
    """The index process failed (its message says why)."""


def index_in_subprocess(library_path: Path | str, space: str, model: str | None = None, *,
                        progress: ProgressCallback = no_progress,
                        cancel: CancelToken = NEVER_CANCELLED) -> IndexStats:
    """:func:`core.search.index_job.update_index` on the library at *library_path*, in a child process."""
    if getattr(sys, "frozen", False):
        from core.library import Library

        with Library(library_path) as library:
            return update_index(library, space, model, progress=progress, cancel=cancel)  # type: ignore[arg-type]
    command = [sys.executable, "-m", "core.search.index_process", str(library_path), space, *([model] if model else [])]
    try:
        child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, encoding="utf-8", creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
    except OSError as exc:
        raise IndexProcessError(f"cannot start the index process: {exc}") from exc
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    done = threading.Event()
    sender = _CancelSender(child.stdin)
    threading.Thread(target=_watch_cancel, args=(cancel, sender, done), daemon=True).start()
    stderr_lines: list[str] = []
    drain = threading.Thread(target=lambda: stderr_lines.extend(child.stderr), daemon=True)
    drain.start()
    stats: IndexStats | None = None
    error: str | None = None
    try:
        for line in child.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue  # a library's stray print
            if "progress" in message:
                p = message["progress"]
                progress(Progress(p["done"], p.get("total"), p.get("message", ""), p.get("counts", {})))
                if cancel.is_set():
                    sender.send()
            elif "stats" in message:
                known = {f.name for f in fields(IndexStats)}
                stats = IndexStats(**{k: v for k, v in message["stats"].items() if k in known})
            elif "error" in message:
                error = message["error"]
    finally:
        done.set()
        try:
            child.stdin.close()
        except OSError:
            pass
        child.wait()
        drain.join(timeout=5)
    if error is not None:
        raise IndexProcessError(error)
    if stats is None:
        tail = "".join(stderr_lines).strip().splitlines()[-1:] or [f"exit status {child.returncode}"]
        raise IndexProcessError(f"the index process stopped unexpectedly ({tail[0]})")
    return stats


def main(argv: list[str] | None = None) -> int:
    """Child entry point: index, reporting on stdout; stop when stdin says so."""
    args = list(sys.argv[1:] if argv is None else argv)
    out, lock = sys.stdout, threading.Lock()
    if len(args) not in (2, 3):
        _emit(out, lock, {"error": "usage: python -m core.search.index_process LIBRARY text|image [MODEL]"})
        return 2
    if hasattr(os, "nice"):
        try:
            os.nice(10)
        except OSError:
            pass
    cancel = threading.Event()

    def watch_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "cancel":
                break
        cancel.set()

    threading.Thread(target=watch_stdin, daemon=True).start()

    def report(p: Progress) -> None:
        _emit(out, lock, {"progress": {"done": p.done, "total": p.total, "message": p.message, "counts": p.counts}})

    try:
        from core.library import Library

        with Library(args[0]) as library:
            stats: Any = update_index(library, args[1], args[2] if len(args) > 2 else None,  # type: ignore[arg-type]
                                      progress=report, cancel=cancel)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        _emit(out, lock, {"error": str(exc) or type(exc).__name__})
        return 1
    _emit(out, lock, {"stats": asdict(stats)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
