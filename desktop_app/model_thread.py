"""Captioning and training on one long-lived model thread that owns the loaded model.

:class:`CaptionService` (GUI thread) starts a ``QThread`` once and moves a
:class:`_CaptionWorker` onto it.  A job — a ``core.captioning.job_spec.CaptionJobSpec``,
the same the CLI builds — travels there as a queued signal; the
worker imports ``core.captioning`` *there* (torch never loads on the GUI thread, and
never at start-up), loads the captioner once and keeps it for the next job with the same
model/adapter/device, and calls ``core.captioning.engine.run_caption_job``.

Results come back without blocking or flooding the GUI:

* ``progress`` snapshots (the engine throttles them) arrive as a queued signal;
* the image ids of each committed batch go into a :class:`~desktop_app.background.Coalescer`
  that hands them to the grid at most every 50 ms;
* pause and cancel are thread-safe flags the engine polls between batches
  (:class:`PauseToken`), so they work while the worker thread is busy.

Training a new model version (the Train dialog), evaluating one or writing one out merged
(the Versions window) are :class:`ModelJob` s on the same thread, one job at a time: each
frees the loaded captioner first, so a caption model and another copy of a model never sit
in memory together (two copies of a 7B VLM do not fit one GPU), and captioning cannot
start until the job has ended.

The engine is reached through a small seam (``engine=``: an object with
``resolve_model``, ``run_caption_job`` and ``load_captioner``) so tests run the real
worker with a fake captioner.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from PySide6.QtCore import QObject, QThread, QTimer, Signal, Slot

from core.captioning.job_spec import CaptionJobSpec
from core.errors import UserFacingError, user_message
from core.library import Library
from desktop_app.background import JOB_NICENESS, Coalescer, lower_thread_priority

log = logging.getLogger(__name__)

def is_user_error(exc: BaseException) -> bool:
    """*exc* says what the person should change (a name, the data, the base model), not a bug."""
    return isinstance(exc, UserFacingError)


class PauseToken:
    """A cancel token whose ``is_set()`` blocks while paused.

    The engine checks its cancel token between batches; holding it there is a pause
    that needs no support from the engine, and a cancel wakes it at once.
    """

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self._running = threading.Event()
        self._running.set()

    def is_set(self) -> bool:
        while not self._running.is_set() and not self._cancel.is_set():
            self._running.wait(0.05)
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()


def real_engine() -> Any:
    """The real engine, imported lazily (on the inference thread)."""
    from core.captioning import load_captioner
    from core.captioning.engine import run_caption_job
    from core.captioning.registry import resolve_model

    return SimpleNamespace(
        run_caption_job=run_caption_job,
        load_captioner=load_captioner,
        resolve_model=resolve_model,
    )


def hub_download_bytes(model: str) -> int | None:
    """Bytes of *model* in the Hugging Face cache so far (None for a local folder).

    The loader downloads into ``models--org--name/blobs`` (``*.incomplete`` while in
    flight); polling that folder shows download progress whatever the loader does
    internally, and costs a few ``stat`` calls.
    """
    if not model or os.path.isdir(os.path.expanduser(model)):
        return None
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return None
    blobs = Path(HF_HUB_CACHE) / f"models--{model.replace('/', '--')}" / "blobs"
    total = 0
    try:
        with os.scandir(blobs) as entries:
            for entry in entries:
                try:
                    total += entry.stat().st_size
                except OSError:
                    continue
    except OSError:
        return 0
    return total


#: Model threads whose job outlived ``CaptionService.shutdown``'s wait (see there).
_DETACHED_THREADS: list[QThread] = []


def threads_still_running() -> bool:
    """A model thread let go by ``shutdown`` is still working (exiting must not wait)."""
    return any(thread.isRunning() for thread in _DETACHED_THREADS)


class ModelJob(QObject):
    """Work that loads a model of its own, for the model thread: training a version,
    evaluating one, writing one out merged.

    ``work(progress=, cancel=, on_epoch=)`` runs on the model thread, which emits these
    signals from there, so they reach GUI-thread receivers queued.  ``cancel`` is the
    job's own token (training checks it between steps).  ``description`` names the job
    in messages ("Training “beach-lora”"); ``owner`` is the window it was started from,
    which the main window's status bar can bring back while the job runs.  Whoever
    cancels calls :meth:`request_cancel`, so every view of the job (its window, the
    status bar) hears it; ``cancellable`` is False for work that cannot stop midway.
    """

    progress = Signal(object)
    #: One per evaluated training epoch (a dict of metrics), for the live chart.
    epoch = Signal(object)
    #: What *work* returned.
    finished = Signal(object)
    #: (message for the person, traceback for the log)
    failed = Signal(str, str)
    #: Somebody asked the job to stop (GUI thread).
    cancel_requested = Signal()

    def __init__(self, description: str, work: Callable[..., Any], owner: Any = None, *,
                 cancellable: bool = True) -> None:
        super().__init__()
        self.description = description or "A model job"
        self.work = work
        self.owner = owner
        self.cancellable = cancellable
        self.cancel = threading.Event()

    def request_cancel(self) -> None:
        """Stop after the current step (GUI thread); every view of the job is told."""
        if self.cancellable and not self.cancel.is_set():
            self.cancel.set()
            self.cancel_requested.emit()


class _CaptionWorker(QObject):
    """Lives on the model thread; keeps the loaded captioner between jobs."""

    loading = Signal(str)
    #: Status lines from the model loader ("Downloading ...", "Loading weights ...").
    load_message = Signal(str)
    loaded = Signal(str)
    progress = Signal(object)
    finished = Signal(object)
    failed = Signal(str, str)
    #: A model job has returned (emitted before the job's own finished/failed).
    model_job_ended = Signal()

    def __init__(self, engine: Any | None, batches: Coalescer) -> None:
        super().__init__()
        self._engine = engine
        self._batches = batches
        self._captioner: Any = None
        self._key: tuple[str, str | None, str] | None = None

    def _get_engine(self) -> Any:
        if self._engine is None:
            self._engine = real_engine()
        return self._engine

    @Slot(object, object, object, object)
    def run_job(self, library: Library, spec: CaptionJobSpec, token: PauseToken, restyle: Any = None) -> None:
        lower_thread_priority(JOB_NICENESS)  # torch's CPU threads, started from here, inherit it
        try:
            engine = self._get_engine()
        except ImportError as exc:
            self.failed.emit(
                "The captioning engine is not available in this installation.", f"{exc}"
            )
            return
        captioned: list[int] = []
        after = self._last_caption_id(library, restyle)

        def on_batch(ids: list[int]) -> None:
            captioned.extend(ids)
            self._batches.add(ids)

        if spec.backend != "local":
            self._run_server_job(engine, library, spec, token, restyle, after)
            return
        try:
            # Resolved once, here: a model-version name stands for a base model + adapter;
            # the worker loads what it names and the engine records the same.
            resolved = engine.resolve_model(library, spec.model, spec.adapter)
            key = (resolved.model_name, resolved.adapter, spec.device, spec.runtime)
            if self._captioner is None or self._key != key:
                self.release()
                self.loading.emit(spec.label())
                self._captioner = engine.load_captioner(
                    resolved.model_name, adapter=resolved.adapter, device=spec.device, runtime=spec.runtime,
                    progress=self.load_message.emit,
                )
                self._key = key
                self.loaded.emit(spec.label())
            if token.cancelled:
                raise _Cancelled
            stats = engine.run_caption_job(
                library,
                spec,
                resolved=resolved,
                captioner=self._captioner,
                progress=self.progress.emit,
                cancel=token,
                on_batch=on_batch,
            )
            if restyle is not None:
                stats = self._restyle(library, restyle, captioned, after, token, stats)
        except _Cancelled:
            self.finished.emit(None)
        except Exception as exc:  # noqa: BLE001 - shown in the GUI, never a crash
            detail = traceback.format_exc()
            log.error("captioning failed: %s", detail)
            message = user_message(exc)
            self.failed.emit(message, detail)
        else:
            self.finished.emit(stats)

    @staticmethod
    def _last_caption_id(library: Library, restyle: Any) -> int:
        from core.restyle.job import last_caption_id

        return last_caption_id(library) if restyle is not None else 0

    def _restyle(self, library: Library, restyle: Any, captioned: list[int], after: int, token: PauseToken,
                 stats: Any) -> Any:
        """The restyle stage over the captions the caption job just wrote (rows after *after*), on this thread.

        One model in memory at a time: a local restyler loads after the captioner is freed
        (both together measured in docs/optimization-notes.md, "Restyle stage memory")."""
        from core.restyle.job import TwoStageStats, run_restyle_job, written_after

        captioned = written_after(library, captioned, after) if not stats.cancelled else []
        if not captioned:
            return TwoStageStats(stats, None)
        if restyle.backend == "local":
            self.release()
        self.load_message.emit(f"Restyling with {restyle.restyler}")
        restyled = run_restyle_job(library, replace(restyle, scope=captioned),
                                   progress=self.progress.emit, cancel=token, on_batch=self._batches.add)
        return TwoStageStats(stats, restyled)

    def _run_server_job(self, engine: Any, library: Library, spec: CaptionJobSpec, token: PauseToken,
                        restyle: Any = None, after: int = 0) -> None:
        """A model-server job: the engine opens (one request) and closes the server captioner
        itself, so nothing is kept; a local model kept from an earlier job is freed."""
        try:
            self.release()
            self.loading.emit(spec.label())
            self.loaded.emit(spec.label())  # the engine checks the server is there before captioning
            captioned: list[int] = []
            stats = engine.run_caption_job(
                library, spec, progress=self.progress.emit, cancel=token,
                on_batch=lambda ids: (captioned.extend(ids), self._batches.add(ids)),
            )
            if restyle is not None:
                stats = self._restyle(library, restyle, captioned, after, token, stats)
        except Exception as exc:  # noqa: BLE001 - shown in the GUI, never a crash
            log.error("captioning with a server failed: %s", traceback.format_exc())
            message = user_message(exc)
            self.failed.emit(message, traceback.format_exc())
        else:
            self.finished.emit(stats)

    @Slot(object)
    def run_model_job(self, job: ModelJob) -> None:
        lower_thread_priority(JOB_NICENESS)
        try:
            # The job loads its own copy of a model: free the captioner first, so the
            # two never share the memory (or the GPU).  Inside the try: a close() that
            # raises (after a CUDA error) must still end the job, or the thread stays busy.
            self.release()
            result = job.work(progress=job.progress.emit, cancel=job.cancel, on_epoch=job.epoch.emit)
        except Exception as exc:  # noqa: BLE001 - shown in the dialog, never a crash
            detail = traceback.format_exc()
            if is_user_error(exc):  # the person can act on the message; a traceback only alarms
                log.info("%s: %s", job.description, exc)
            else:
                log.error("%s failed: %s", job.description, detail)
            # The service is idle again before the dialog hears how the job ended.
            self.model_job_ended.emit()
            job.failed.emit(str(exc) or type(exc).__name__, detail)
        else:
            self.model_job_ended.emit()
            job.finished.emit(result)

    @Slot()
    def release(self) -> None:
        """Close the loaded captioner (frees the model's memory)."""
        if self._captioner is not None:
            close = getattr(self._captioner, "close", None)
            try:
                if close is not None:
                    close()
            finally:
                self._captioner = None
                self._key = None


class _Cancelled(Exception):
    pass


class CaptionService(QObject):
    """GUI-thread handle on the model thread: caption jobs (start, pause, resume, cancel)
    and model jobs (training, evaluating, merging), one at a time."""

    #: A job was accepted (its CaptionJobSpec).
    started = Signal(object)
    #: Loading (and maybe downloading) a model: its description.
    model_loading = Signal(str)
    #: A status line from the loader while it loads or downloads.
    model_message = Signal(str)
    model_loaded = Signal(str)
    #: Bytes of the model downloaded so far (only while loading a hub model).
    download_progress = Signal(int)
    progress = Signal(object)
    #: Ids of images whose captions were committed, coalesced (50 ms).
    captions_landed = Signal(list)
    #: The engine's CaptionJobStats (None when cancelled before it started).
    finished = Signal(object)
    #: (message for the user, details for the log)
    failed = Signal(str, str)
    #: Emitted whenever running/paused/model_job changes.
    state_changed = Signal()

    _request = Signal(object, object, object, object)
    _model_job_request = Signal(object)
    _release = Signal()

    def __init__(self, engine: Any | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._batches = Coalescer(50, self)
        self._batches.flushed.connect(self.captions_landed)
        self._thread = QThread(self)
        self._thread.setObjectName("captiondesk-model")
        self._worker = _CaptionWorker(engine, self._batches)
        self._worker.moveToThread(self._thread)
        self._request.connect(self._worker.run_job)
        self._model_job_request.connect(self._worker.run_model_job)
        self._worker.model_job_ended.connect(self._on_model_job_ended)
        self._release.connect(self._worker.release)
        self._worker.loading.connect(self._on_loading)
        self._worker.loaded.connect(self._on_loaded)
        self._worker.load_message.connect(self.model_message)
        self._worker.progress.connect(self.progress)
        self._worker.finished.connect(self._on_finished)
        self._worker.failed.connect(self._on_failed)
        self._thread.finished.connect(self._worker.deleteLater)
        self._thread.start()
        self._token: PauseToken | None = None
        self._spec: CaptionJobSpec | None = None
        self._model_job: ModelJob | None = None
        self._download_timer = QTimer(self)
        self._download_timer.setInterval(500)
        self._download_timer.timeout.connect(self._poll_download)
        self._download_base: int | None = None
        #: A caption model is loaded on the model thread (Unload model has something to free).
        self.model_in_memory = False

    # -- control (GUI thread) ----------------------------------------------------------

    @property
    def running(self) -> bool:
        """A caption job is running."""
        return self._token is not None

    @property
    def model_job(self) -> ModelJob | None:
        """The training/evaluating/merging job on the model thread, if one is."""
        return self._model_job

    @property
    def current_job(self) -> str | None:
        """What the model thread is doing, in words ("Captioning", "Training “x”"); None: idle."""
        if self.running:
            return "Captioning"
        return self._model_job.description if self._model_job is not None else None

    @property
    def busy(self) -> bool:
        """Captioning or a model job: a new job of either kind has to wait."""
        return self.running or self._model_job is not None

    @property
    def paused(self) -> bool:
        return self._token is not None and self._token.paused

    def start(self, library: Library, spec: CaptionJobSpec, restyle: Any = None) -> bool:
        """Queue *spec* (then the *restyle* stage, a ``RestyleSpec``, over what it captioned) on the
        model thread; False if it is busy (captioning or a model job)."""
        if self.busy:
            return False
        self._token = PauseToken()
        self._spec = spec
        self.started.emit(spec)
        self.state_changed.emit()
        self._request.emit(library, spec, self._token, restyle)
        return True

    def pause(self) -> None:
        if self._token is not None:
            self._token.pause()
            self.state_changed.emit()

    def resume(self) -> None:
        if self._token is not None:
            self._token.resume()
            self.state_changed.emit()

    def cancel(self) -> None:
        if self._token is not None:
            self._token.cancel()
            self.state_changed.emit()

    def start_model_job(self, job: ModelJob) -> bool:
        """Queue *job* on the model thread; False while captioning or another job is going."""
        if self.busy:
            return False
        self._model_job = job
        self.model_in_memory = False  # the model thread frees the caption model before the job
        self.state_changed.emit()
        self._model_job_request.emit(job)
        return True

    def busy_reason(self, wanted: str) -> str | None:
        """Why *wanted* ("Training", "Evaluating", ...) cannot start now, in one plain line."""
        if self.running:
            return (f"Captioning is running. {wanted} uses the same model thread, so it can start "
                    "when captioning has finished or been cancelled.")
        if self._model_job is not None:
            return (f"{self._model_job.description} is using the model thread; {wanted.lower()} can "
                    "start when it has finished.")
        return None

    def _on_model_job_ended(self) -> None:
        self._model_job = None
        self.state_changed.emit()

    def release_model(self) -> None:
        """Free the loaded model (between jobs)."""
        self._release.emit()
        self.model_in_memory = False
        self.state_changed.emit()

    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Cancel any job, free the model and stop the thread (closing the window)."""
        self.cancel()
        if self._model_job is not None:
            self._model_job.cancel.set()
        self._release.emit()
        self._thread.quit()
        stopped = self._thread.wait(timeout_ms)
        self._batches.flush()
        if not stopped:
            # A job that does not check its token in time (a model still loading, a merge
            # being written): the thread must not be deleted with this object while it runs
            # (Qt aborts the process), so it is kept alive here, and the app exits without
            # waiting for it (see desktop_app.app; committed work is safe either way).
            log.warning("the model thread was still busy %d ms after it was asked to stop", timeout_ms)
            self._thread.setParent(None)
            _DETACHED_THREADS.append(self._thread)
        return stopped

    # -- worker results (GUI thread) ----------------------------------------------------

    def _on_loading(self, description: str) -> None:
        model = self._spec.model if self._spec else ""
        self._download_base = hub_download_bytes(model)
        if self._download_base is not None:
            self._download_timer.start()
        self.model_loading.emit(description)

    def _poll_download(self) -> None:
        model = self._spec.model if self._spec else ""
        now = hub_download_bytes(model)
        if now is not None and self._download_base is not None and now > self._download_base:
            self.download_progress.emit(now - self._download_base)

    def _on_loaded(self, description: str) -> None:
        self._download_timer.stop()
        self.model_in_memory = True
        self.model_loaded.emit(description)
        self.state_changed.emit()

    def _done(self) -> None:
        self._download_timer.stop()
        # Deliver the last batch before "finished" so the grid is complete when told.
        self._batches.flush()
        self._token = None
        self._spec = None
        self.state_changed.emit()

    def _on_finished(self, stats: Any) -> None:
        self._done()
        self.finished.emit(stats)

    def _on_failed(self, message: str, detail: str) -> None:
        self._done()
        self.failed.emit(message, detail)
