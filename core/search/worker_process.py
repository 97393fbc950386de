"""One long-lived child process per window session for search by meaning: it indexes and embeds queries.

Importing torch and loading a model hold the GIL for seconds, and a new child per index
run loads the model again each time (README, "Search by meaning").  :class:`SearchWorker`
starts the child on first use and keeps it: the embedding models stay loaded between
index runs, and the window's queries are embedded there too, so the window's own process
never imports torch.  Index runs and query embeddings are served at the same time
(queries do not wait behind a long index run).

Protocol, JSON lines.  To the child: ``{"id", "op": "index", "library", "space", "model"}``,
``{"id", "op": "embed", "space", "model", "text"}``, ``{"id", "op": "cancel"}`` (stops index
run ``id`` after its current batch; every committed batch stays); EOF ends the child.  From
the child, tagged with the request's ``id``: ``progress``, then ``stats``, ``vector``
(base64 float32) or ``error``.  A frozen build serves requests in-process.

The child is ``python -m core.search.worker_process``.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import queue
import subprocess
import sys
import threading
from dataclasses import asdict, fields
from pathlib import Path
from typing import IO, Any

import numpy as np

from core.jobs import NEVER_CANCELLED, CancelToken, Progress, ProgressCallback, no_progress
from core.search.index_job import IndexStats


class SearchWorkerError(Exception):
    """The search worker failed a request or stopped (its message says why)."""


def embed_query(space: str, model: str | None, text: str) -> np.ndarray:
    """*text* as a unit vector in *space* (``text`` or ``image``), with the process's cached model."""
    from core.search.embedders import image_embedder, text_embedder

    if space == "text":
        return text_embedder(model).encode([text])[0]
    return image_embedder(model).encode_texts([text])[0]


class SearchWorker:
    """The parent's handle on the child; thread-safe, started on first use, restarted if it died."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._child: subprocess.Popen[str] | None = None
        #: Each request in flight: the child it was sent to, and where its answers go.
        self._pending: dict[int, tuple[subprocess.Popen[str], queue.Queue[dict[str, Any] | None]]] = {}
        self._next = 0
        #: The child's last stderr lines: what an unexpected end says.
        self._stderr: collections.deque[str] = collections.deque(maxlen=3)
        self.in_process = bool(getattr(sys, "frozen", False))

    def _start(self) -> subprocess.Popen[str]:
        if self._child is not None and self._child.poll() is None:
            return self._child
        try:
            child = subprocess.Popen([sys.executable, "-m", "core.search.worker_process"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                                     creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        except OSError as exc:
            raise SearchWorkerError(f"cannot start the search worker: {exc}") from exc
        self._child = child
        threading.Thread(target=self._read, args=(child,), daemon=True).start()
        threading.Thread(target=lambda: self._stderr.extend(child.stderr or ()), daemon=True).start()
        return child

    def _read(self, child: subprocess.Popen[str]) -> None:
        assert child.stdout is not None
        for line in child.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue  # a library's stray print
            with self._lock:
                sent = self._pending.get(message.get("id"))
            if sent is not None:
                sent[1].put(message)
        with self._lock:  # the child ended: every request sent to it hears it (not a successor's)
            if self._child is child:
                self._child = None
            boxes = [box for owner, box in self._pending.values() if owner is child]
        for box in boxes:
            box.put(None)

    def _send(self, message: dict[str, Any]) -> tuple[int, queue.Queue[dict[str, Any] | None]]:
        with self._lock:
            child = self._start()
            self._next += 1
            request = self._next
            box: queue.Queue[dict[str, Any] | None] = queue.Queue()
            self._pending[request] = (child, box)
            self._write(child, {**message, "id": request})
        return request, box

    def _write(self, child: subprocess.Popen[str] | None, message: dict[str, Any]) -> None:
        if child is None or child.stdin is None:
            return
        try:
            child.stdin.write(json.dumps(message) + "\n")
            child.stdin.flush()
        except OSError:
            pass  # the reader thread reports the child's end

    def _done(self, request: int) -> None:
        with self._lock:
            self._pending.pop(request, None)

    def index(self, library_path: Path | str, space: str, model: str | None = None, *,
              progress: ProgressCallback = no_progress, cancel: CancelToken = NEVER_CANCELLED) -> IndexStats:
        """:func:`core.search.index_job.update_index` on the library at *library_path*, in the worker."""
        if self.in_process:
            from core.library import Library
            from core.search.index_job import update_index

            with Library(library_path) as library:
                return update_index(library, space, model, progress=progress, cancel=cancel)  # type: ignore[arg-type]
        request, box = self._send({"op": "index", "library": str(library_path), "space": space, "model": model})
        cancelled = False
        try:
            while True:
                if cancel.is_set() and not cancelled:
                    cancelled = True
                    with self._lock:
                        self._write(self._child, {"op": "cancel", "id": request})
                try:
                    message = box.get(timeout=0.1)
                except queue.Empty:
                    continue
                if message is None:
                    raise SearchWorkerError(self._ended())
                if "progress" in message:
                    p = message["progress"]
                    progress(Progress(p["done"], p.get("total"), p.get("message", ""), p.get("counts", {})))
                elif "stats" in message:
                    known = {f.name for f in fields(IndexStats)}
                    return IndexStats(**{k: v for k, v in message["stats"].items() if k in known})
                elif "error" in message:
                    raise SearchWorkerError(message["error"])
        finally:
            self._done(request)

    def embed(self, space: str, model: str | None, text: str) -> np.ndarray:
        """*text* as a unit vector in *space*, embedded by the worker's loaded model."""
        if self.in_process:
            return embed_query(space, model, text)
        request, box = self._send({"op": "embed", "space": space, "model": model, "text": text})
        try:
            message = box.get()
        finally:
            self._done(request)
        if message is None:
            raise SearchWorkerError(self._ended())
        if "error" in message:
            raise SearchWorkerError(message["error"])
        return np.frombuffer(base64.b64decode(message["vector"]), dtype="<f4").copy()

    def _ended(self) -> str:
        tail = [line.strip() for line in self._stderr if line.strip()][-1:]
        return "the search worker stopped unexpectedly" + (f" ({tail[0]})" if tail else "")

    def close(self) -> None:
        """End the child (a running index run stops after its current batch; its batches stay)."""
        with self._lock:
            child, self._child = self._child, None
        if child is None:
            return
        try:
            assert child.stdin is not None
            child.stdin.close()
        except OSError:
            pass
        try:
            child.wait(timeout=3)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _emit(out: IO[str], lock: threading.Lock, message: dict[str, Any]) -> None:
    with lock:
        out.write(json.dumps(message) + "\n")
        out.flush()


def main() -> int:
    """Child entry point: serve requests from stdin until EOF."""
    out, lock = sys.stdout, threading.Lock()
    if hasattr(os, "nice"):  # background work: the interactive window goes first
        try:
            os.nice(10)
        except OSError:
            pass
    cancels: dict[int, threading.Event] = {}
    threads: list[threading.Thread] = []

    def index(request: dict[str, Any], cancel: threading.Event) -> None:
        from core.library import Library
        from core.search.index_job import update_index

        def report(p: Progress) -> None:
            _emit(out, lock, {"id": request["id"], "progress": {"done": p.done, "total": p.total,
                                                                "message": p.message, "counts": p.counts}})

        try:
            with Library(request["library"]) as library:
                stats = update_index(library, request["space"], request.get("model"), progress=report, cancel=cancel)
            _emit(out, lock, {"id": request["id"], "stats": asdict(stats)})
        except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
            _emit(out, lock, {"id": request["id"], "error": str(exc) or type(exc).__name__})

    def embed(request: dict[str, Any]) -> None:
        try:
            vector = embed_query(request["space"], request.get("model"), request["text"])
            data = base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")
            _emit(out, lock, {"id": request["id"], "vector": data})
        except Exception as exc:  # noqa: BLE001
            _emit(out, lock, {"id": request["id"], "error": str(exc) or type(exc).__name__})

    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError:
            continue
        op = request.get("op")
        if op == "cancel":
            if request.get("id") in cancels:
                cancels[request["id"]].set()
            continue
        if op == "index":
            cancels[request["id"]] = cancel = threading.Event()
            thread = threading.Thread(target=index, args=(request, cancel), daemon=True)
        elif op == "embed":
            thread = threading.Thread(target=embed, args=(request,), daemon=True)
        else:
            _emit(out, lock, {"id": request.get("id"), "error": f"unknown request {op!r}"})
            continue
        thread.start()
        threads.append(thread)
    for cancel in cancels.values():  # the window went: stop after the current batch
        cancel.set()
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
