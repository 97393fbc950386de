"""The caption job on a Ray cluster: the same job as :func:`core.captioning.engine.run_caption_job`,
with decoding and the model spread over a pool of Ray actors.

:func:`run_caption_job_on_ray` keeps everything that touches the library on the driver
(this process): the job record, the selection (``select_pending_images``: resume, never a
person's caption) and the commits (``commit_caption_batch``: provenance, per-image
errors, the human-caption rule) are the engine's own functions.  Only the work in between
moves to the cluster: ``ray.data.from_items`` of ``(image id, path)`` rows →
``map_batches(CaptionActor, ActorPoolStrategy(size=N))`` → results streamed back with
``iter_batches``, one committed transaction per actor batch.  Cancel is checked between
batches; a killed driver loses at most the batch in flight, and running the job again
resumes like the in-process engine.

**Shared storage.** Rows carry *paths*, not bytes: every worker must see each photo at
the same absolute path as the driver (one machine; or the library's folders on NFS/SMB
mounted at the same path on every node).  Without that, mount the storage at the same
path on every node or sync the folders to the same path first; shipping image bytes
through the object store is not supported.  Workers must also have CaptionDesk (this
package) and the model (hub cache or the same folder path) installed.

**Actors.** Each actor loads the captioner once (``core.captioning.load_captioner``, the
engine's loader) and decodes with the engine's decoder (``core.imaging`` through
``_decode_batch``).  Default count: one per GPU when the cluster has GPUs (and the spec
does not ask for the CPU); otherwise one per node holding CPUs, each using all that
node's cores (torch threads scale within a batch).  ``actors=N`` on CPUs gives each actor
``total CPUs // N`` cores, and each actor sets torch's thread count to its own
``num_cpus``: Ray's ``OMP_NUM_THREADS`` for actors gives way to one already in the
environment ``ray start`` ran in, and two 1-core actors then ran 2 threads each on 2
cores, oversubscribing them (see docs/optimization-notes.md, "Ray actors").

``ray`` is imported only inside these functions: without ``--ray`` nothing imports it.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from core.captioning.batching import _BatchCaptioner, _decode_batch
from core.captioning.calibration import with_photo_features
from core.captioning.claims import CaptionClaims
from core.captioning.engine import (
    CaptionJobStats,
    batch_provenance,
    caption_job_params,
    caption_provenance,
    commit_caption_batch,
    image_prompts,
    job_kind,
    select_pending_images,
)
from core.captioning.errors import ModelLoadError
from core.captioning.job_spec import CaptionJobSpec, GenerationSettings
from core.captioning.prompting import PromptPlan, check_trained_kind, plan_for_kind, plan_prompt, prompt_batches
from core.captioning.registry import ResolvedModel, resolve_model
from core.jobs import NEVER_CANCELLED, CancelToken, ProgressCallback, no_progress
from core.kinds import CAPTION, CaptionKind

if TYPE_CHECKING:
    from core.library import Library

log = logging.getLogger(__name__)

#: ``address`` values that start a local Ray instance in this process (``ray.init()``).
LOCAL_ADDRESSES = (None, "", "local")
#: Object store of a local instance: rows are paths and captions, so little is needed.
#: ``$CAPTIONDESK_RAY_OBJECT_STORE_MB`` overrides it (Ray's minimum is 75 MB).
DEFAULT_OBJECT_STORE_MB = 256
#: The provenance key saying which runner wrote a caption.
RUNNER_KEY = "runner"


class RayNotInstalledError(ImportError):
    """Ray is an optional extra; the message says how to install it."""


class RayClusterError(RuntimeError):
    """The Ray cluster at the given address could not be joined (nothing was captioned)."""


def import_ray() -> Any:
    """``ray`` with Ray Data, or :class:`RayNotInstalledError` saying how to get it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the Data library is the part we use
    except ImportError as exc:
        raise RayNotInstalledError(
            f"Ray is not installed ({exc}); install it with: pip install 'captiondesk[ray]'"
        ) from None
    return ray


class CaptionActor:
    """One Ray actor of the pool: loads the captioner once, captions batches of rows.

    Input batch (pyarrow): ``id`` (int64), ``path`` (binary: ``os.fsencode`` of the
    absolute path, so names that are not valid UTF-8 travel too), ``prompt`` (the rendered
    preset/template prompt, null: the model's default; the driver renders it).  Output:
    ``id``, ``prompt``, ``text``, ``score``, ``token_ids``, ``token_logprobs`` and ``token_margins`` (for the
    driver's confidence score), ``error`` (null when captioned), ``decode_failed`` (the file
    itself is bad: the image is marked ``error``), ``provenance`` (JSON, the actor's
    ``caption_provenance`` plus ``runner: ray``) and ``load_error`` (the
    ``ModelLoadError`` kind when this actor could not load the model; ``error`` says why).
    """

    def __init__(self, *, model: str, adapter: str | None, device: str, optimize: str, runtime: str = "torch",
                 settings: dict[str, Any], batch_size: int, cpu_threads: int | None = None) -> None:
        self.settings = GenerationSettings.from_dict(settings)
        # Every torch call of this actor (loading, int8 quantisation, generate) runs on one
        # thread of its own.  Ray runs __init__ on the actor's main thread but the batches
        # on another; torch's OpenMP runtime keeps a thread team per calling thread, and
        # with two teams on a machine with two cores libgomp stops spinning and puts its
        # workers to sleep after each parallel region: every small op then pays a futex
        # wake-up (see docs/optimization-notes.md, "Ray actors").  One owner thread keeps
        # one team, like the app's long-lived inference thread.
        self._torch_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="caption-actor")
        # A model that cannot load is reported in the first batch's rows, not raised:
        # Ray reports a failed constructor as ActorDiedError and a failed batch as
        # UserCodeException, neither carrying the ModelLoadError (its kind, its
        # message for the person) to the driver, which stops the job with it.
        self.load_error: ModelLoadError | None = None
        self._torch_thread.submit(self._load, model, adapter, device, optimize, runtime, batch_size,
                                  cpu_threads).result()

    def _load(self, model: str, adapter: str | None, device: str, optimize: str, runtime: str, batch_size: int,
              cpu_threads: int | None) -> None:
        from core.captioning import load_captioner

        if cpu_threads:
            import torch

            torch.set_num_threads(cpu_threads)  # on the thread that runs torch: OpenMP's setting is per thread

        try:
            self.captioner = load_captioner(model, adapter=adapter, device=device, optimize=optimize,
                                            runtime=runtime)
        except ModelLoadError as exc:
            self.load_error = exc
            return
        # The engine's generate wrapper: OOM back-off and per-image isolation of failures.
        self.runner = _BatchCaptioner(self.captioner, self.settings, batch_size)
        self.provenance = json.dumps({**caption_provenance(self.captioner, self.settings), RUNNER_KEY: "ray"})

    def __call__(self, batch: Any) -> Any:
        return self._torch_thread.submit(self._caption_batch, batch).result()

    def _caption_batch(self, batch: Any) -> Any:
        import pyarrow as pa

        ids = batch.column("id").to_pylist()
        prompts = batch.column("prompt").to_pylist()
        if self.load_error is not None:
            kind = self.load_error.kind
            rows = [_output_row(image_id, error=str(self.load_error), load_error=kind) for image_id in ids]
        else:
            paths = [os.fsdecode(path) for path in batch.column("path").to_pylist()]
            groups: dict[str | None, list[tuple[int, str]]] = {}
            for image_id, path, prompt in zip(ids, paths, prompts, strict=True):
                groups.setdefault(prompt, []).append((image_id, path))
            rows = []
            for prompt, items in groups.items():  # one generate call per prompt (it is baked into the batch)
                rows.extend(self._caption(prompt, items))
        schema = pa.schema([("id", pa.int64()), ("prompt", pa.string()), ("text", pa.string()),
                            ("score", pa.float64()), ("token_ids", pa.list_(pa.int64())),
                            ("token_logprobs", pa.list_(pa.float64())), ("token_margins", pa.list_(pa.float64())),
                            ("photo_features", pa.list_(pa.float64())), ("error", pa.string()),
                            ("decode_failed", pa.bool_()), ("provenance", pa.string()), ("load_error", pa.string())])
        return pa.Table.from_pylist(rows, schema=schema)

    def _caption(self, prompt: str | None, items: list[tuple[int, str]]) -> list[dict[str, Any]]:
        settings = self.settings if prompt is None else replace(self.settings, prompt=prompt)
        self.runner.settings = settings
        prepared = _decode_batch(self.captioner, settings, items)
        results = self.runner.caption(prepared.images, prepared.inputs) if prepared.images else []
        # Measured always (a few ms a photo): the driver, not the actor, knows whether the
        # version's error model reads them.
        results = with_photo_features(prepared.images, results) if results else results
        rows = [_output_row(image_id, prompt=prompt, error=reason, decode_failed=True, provenance=self.provenance)
                for image_id, reason in prepared.failures]
        for image_id, result in zip(prepared.image_ids, results, strict=True):
            if isinstance(result, BaseException):
                rows.append(_output_row(image_id, prompt=prompt, error=str(result), provenance=self.provenance))
            else:
                score = float(result.score) if result.score is not None else None
                rows.append(_output_row(image_id, prompt=prompt, text=result.text, score=score,
                                        token_ids=list(result.token_ids),
                                        token_logprobs=[float(v) for v in result.token_logprobs],
                                        token_margins=[float(v) for v in result.token_margins],
                                        photo_features=list(result.photo_features),
                                        provenance=self.provenance))
        return rows


def _output_row(image_id: int, *, prompt: str | None = None, text: str | None = None, score: float | None = None,
                token_ids: list[int] | None = None, token_logprobs: list[float] | None = None,
                token_margins: list[float] | None = None, photo_features: list[float] | None = None,
                error: str | None = None, decode_failed: bool = False, provenance: str | None = None,
                load_error: str | None = None) -> dict[str, Any]:
    """One row of :class:`CaptionActor`'s output (every column, nulls where unused)."""
    return {"id": image_id, "prompt": prompt, "text": text, "score": score, "token_ids": token_ids or [],
            "token_logprobs": token_logprobs or [], "token_margins": token_margins or [],
            "photo_features": photo_features or [], "error": error, "decode_failed": decode_failed,
            "provenance": provenance, "load_error": load_error}


@dataclass(frozen=True)
class _ActorPlan:
    count: int
    resources: dict[str, float]


def plan_actors(ray: Any, device: str, actors: int | None) -> _ActorPlan:
    """How many actors, and the resources each asks for (see the module docstring)."""
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    gpus = sum(node["Resources"].get("GPU", 0) for node in nodes)
    if gpus >= 1 and device not in ("cpu", "mps"):
        count = actors or int(gpus)
        return _ActorPlan(count, {"num_gpus": min(1.0, gpus / count), "num_cpus": 1})
    node_cpus = [int(node["Resources"].get("CPU", 0)) for node in nodes]
    node_cpus = [cpus for cpus in node_cpus if cpus >= 1] or [1]
    count = actors or len(node_cpus)
    per_actor = max(1, min(max(node_cpus), sum(node_cpus) // count))
    return _ActorPlan(count, {"num_cpus": per_actor})


def _connect(ray: Any, address: str | None) -> bool:
    """Start or join Ray; True when this call started it (and must shut it down)."""
    if ray.is_initialized():
        return False  # the caller's own Ray session (tests, notebooks): use it, leave it
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home
    debug = log.isEnabledFor(logging.DEBUG)
    # Ray's own start-up notices (token auth, SIGTERM handler...) are not the person's
    # business unless they asked for detail (--verbose); errors still show.
    common = {"logging_level": logging.WARNING if debug else logging.ERROR, "log_to_driver": debug}
    if address in LOCAL_ADDRESSES:
        store_mb = int(os.environ.get("CAPTIONDESK_RAY_OBJECT_STORE_MB", DEFAULT_OBJECT_STORE_MB))
        num_cpus = int(os.environ.get("CAPTIONDESK_RAY_NUM_CPUS", 0)) or os.cpu_count() or 1
        ray.init(address="local", num_cpus=num_cpus, object_store_memory=store_mb * 1024 * 1024,
                 include_dashboard=False, **common)
    else:
        _check_reachable(address)
        try:
            ray.init(address=address, **common)  # "auto", "HOST:PORT" or "ray://HOST:PORT"
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayClusterError(f"cannot join the Ray cluster at {address!r}: {exc}") from exc
    return True


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """A ``HOST:PORT`` (or ``ray://HOST:PORT``) that accepts no TCP connection fails here,
    at once: ``ray.init`` would retry it for minutes.  ("auto" is Ray's own lookup.)"""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RayClusterError(f"cannot reach the Ray cluster at {address} ({exc}); is it running?") from None


def _rows_to_commit(
    rows: list[dict[str, Any]],
) -> dict[tuple[str, str | None], tuple[list[int], list[Any], list[tuple[int, str]]]]:
    """Actor output rows → per (provenance, prompt): ``(image_ids, results, failures)`` as
    ``commit_caption_batch`` takes them (a failed caption is an exception with the actor's
    message, so the stored reason reads as in-process)."""
    from core.captioning.captioner import CaptionResult

    grouped: dict[tuple[str, str | None], tuple[list[int], list[Any], list[tuple[int, str]]]] = {}
    for row in rows:
        image_ids, results, failures = grouped.setdefault((row["provenance"], row["prompt"]), ([], [], []))
        if row["decode_failed"]:
            failures.append((row["id"], row["error"]))
        elif row["error"] is not None:
            image_ids.append(row["id"])
            results.append(RuntimeError(row["error"]))
        else:
            image_ids.append(row["id"])
            results.append(CaptionResult(row["text"], row["score"], tuple(row["token_ids"] or ()),
                                         tuple(row["token_logprobs"] or ()), tuple(row.get("token_margins") or ()),
                                         photo_features=tuple(row.get("photo_features") or ())))
    return grouped


def run_caption_job_on_ray(
    library: Library,
    spec: CaptionJobSpec,
    *,
    address: str | None = None,
    actors: int | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken = NEVER_CANCELLED,
    on_batch: Callable[[list[int]], None] | None = None,
) -> CaptionJobStats:
    """Caption the images *spec* selects on a Ray cluster; see the module docstring.

    *address*: None/"local" starts a local Ray instance (all this machine's cores, a
    small object store) and stops it afterwards; "auto", "HOST:PORT" or
    "ray://HOST:PORT" joins a running cluster.  If Ray is already initialised in this
    process, that session is used and left running.  *actors*: the pool size (default:
    see :func:`plan_actors`).  Raises :class:`RayNotInstalledError` without Ray,
    :class:`RayClusterError` when the cluster cannot be joined, and
    :class:`ModelLoadError` when the actors cannot load the model.
    """
    if spec.backend != "local":
        raise ValueError("a model server backend cannot run on Ray (it captions on the server)")
    if actors is not None and actors < 1:
        raise ValueError(f"actors must be a positive integer, got {actors!r}")
    ray = import_ray()
    started = time.monotonic()
    resolved: ResolvedModel = resolve_model(library, spec.model, spec.adapter, spec.backend)
    params = {**caption_job_params(spec, resolved), RUNNER_KEY: "ray",
              "ray_address": address or "local", "ray_actors": actors}
    kind = job_kind(library, spec)
    with library.job("caption", params, CaptionJobStats(), progress) as run:
        stats = run.stats
        selected, stats.skipped = select_pending_images(library, spec, resolved)
        # The dataset is fixed when it is built, so the whole selection is claimed now: a
        # concurrent run (in-process or on Ray) leaves it to this one.
        claims = CaptionClaims(library, run.job_id, spec, resolved)
        claimed = claims.take(selected)
        stats.skipped += len(selected) - len(claimed)
        stats.left_to_other_runs = len(selected) - len(claimed)
        selected = claimed
        total = len(selected)
        run.save(total=total)

        def report(message: str) -> None:
            run.progress(stats.captioned + stats.errors, total, message, force=True)

        if not selected:
            claims.release()
            report("Finished")
            stats.seconds = time.monotonic() - started
            return stats
        prompt_plan = _prompt_plan(spec, resolved, kind)
        prompts = image_prompts(library, prompt_plan, selected)
        report("Starting Ray")
        owns_ray = _connect(ray, address)
        try:
            pool = plan_actors(ray, spec.device, actors)
            log.info("Ray actor pool: %d actor(s), each %s", pool.count, pool.resources)
            report(f"Loading the model on {pool.count} Ray actor(s)")
            _caption_on_ray(ray, library, spec, resolved, selected, prompts, prompt_plan, pool, run, report,
                            cancel, on_batch)
        finally:
            claims.release()
            if owns_ray:
                # Object references left in reference cycles (a stream stopped early by a
                # cancel) must go while Ray is up: freed after shutdown, one makes Ray's
                # core worker end the whole process.
                gc.collect()
                _wait_for_stream_threads()
                ray.shutdown()
        stats.seconds = time.monotonic() - started
        report("Cancelled" if stats.cancelled else "Finished")
    return stats


def _prompt_plan(spec: CaptionJobSpec, resolved: ResolvedModel, kind: CaptionKind) -> PromptPlan:
    """The job's preset/template plan, rendered on the driver (which does not load the model).

    Only a preset or template (the spec's, or the one a trained version recorded) needs the
    family, read from the model's configuration; otherwise the actors' captioner uses its
    own default prompt, as in-process.
    """
    check_trained_kind(kind, resolved.trained_kind, f"'{spec.model}'")
    explicit_prompt = spec.generation.prompt is not None
    wanted = (spec.preset, spec.prompt_template)
    if wanted == (None, None) and not explicit_prompt:
        wanted = resolved.trained_prompt
    if wanted == (None, None) and kind.name == CAPTION:
        return plan_prompt(None, preset=None, template=None)
    from core.captioning.registry import read_model_family

    family, model_type = read_model_family(resolved.model_name)
    return plan_for_kind(family, kind, preset=spec.preset, template=spec.prompt_template, model_type=model_type,
                         trained=resolved.trained_prompt, explicit_prompt=explicit_prompt,
                         trained_kind=resolved.trained_kind)


def _caption_on_ray(ray: Any, library: Library, spec: CaptionJobSpec, resolved: ResolvedModel,
                    selected: list[tuple[int, str]], prompts: list[str | None], prompt_plan: PromptPlan,
                    plan: _ActorPlan, run: Any, report: Callable[[str], None], cancel: CancelToken,
                    on_batch: Callable[[list[int]], None] | None) -> None:
    """Stream the selected rows through the actor pool and commit each result batch."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the job's own progress reports instead
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # per-dataset INFO lines, "progress bars disabled"
    stats = run.stats
    # One block per batch: an actor task then captions one batch and its result comes back
    # at once.  With Ray's default blocking (a few hundred rows a block on a big library)
    # one task would caption many batches and hand them all back at its end: commits,
    # progress and what a killed driver loses would go in steps of hundreds of images.
    # Rows in the engine's batch order (images sharing a prompt together), so an actor
    # batch is one generate call as in-process.
    ordered = [item for _settings, batch in prompt_batches(list(zip(selected, prompts, strict=True)), prompts,
                                                           spec.batch_size, spec.generation)
               for item in batch]
    dataset = ray.data.from_items(
        [{"id": image_id, "path": os.fsencode(path), "prompt": prompt} for (image_id, path), prompt in ordered],
        override_num_blocks=-(-len(selected) // spec.batch_size),
    )
    captioned = dataset.map_batches(
        CaptionActor,
        fn_constructor_kwargs={
            "model": resolved.model_name, "adapter": resolved.adapter, "device": spec.device,
            "optimize": spec.optimize, "runtime": spec.runtime, "settings": spec.generation.to_dict(), "batch_size": spec.batch_size,
            "cpu_threads": int(plan.resources["num_cpus"]),
        },
        compute=ray.data.ActorPoolStrategy(size=plan.count),
        batch_size=spec.batch_size,
        batch_format="pyarrow",
        **plan.resources,
    )
    # No prefetch: with one batch prefetched, Ray Data's iterator thread holds a finished
    # batch until the next one is done too, so each commit came one actor batch late
    # (the first commit after the second batch, the last two together).  The
    # actor pool still queues batches ahead on the actors; only the hand-over waits less.
    batches = iter(captioned.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0))
    try:
        while not cancel.is_set():
            try:
                block = next(batches)
            except StopIteration:
                break
            except Exception:
                if cancel.is_set():
                    break  # Ctrl-C reached the Ray processes too: a cancel, not a failure
                raise
            rows = block.to_pylist()
            for row in rows:
                if row["load_error"] is not None:
                    raise ModelLoadError(row["error"], kind=row["load_error"], model=resolved.model_name)
            for (provenance, prompt), (image_ids, results, failures) in _rows_to_commit(rows).items():
                settings = spec.generation if prompt is None else replace(spec.generation, prompt=prompt)
                changed = commit_caption_batch(
                    library, image_ids, results, failures, resolved,
                    batch_provenance(json.loads(provenance), prompt_plan, settings), stats, prompt_plan,
                    max_chars=spec.max_caption_chars)
                if on_batch is not None and changed:
                    on_batch(changed)
            run.save(done=stats.captioned + stats.errors, checkpoint=stats.counts())
            report("Captioning")
        stats.cancelled = cancel.is_set()
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # stops the streaming executor (and with it the actor pool)


#: Ray Data's (2.60) background thread that feeds ``iter_batches``.
_STREAM_THREAD_NAME = "iter_threaded"


def _wait_for_stream_threads(timeout: float = 120.0) -> None:
    """Wait until Ray Data's iterator threads have ended, before ``ray.shutdown()``.

    A stream closed early (cancel) leaves its feeding thread blocked on the batch in
    flight; it ends once that batch arrives (one actor batch).  If it touched Ray after
    the shutdown, Ray's core worker would end this whole process ("The core worker has
    already been shutdown"), exit status 1 instead of the job's own.  Found by name:
    Ray Data has no public handle on it.
    """
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name == _STREAM_THREAD_NAME and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
