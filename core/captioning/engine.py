"""The batch captioning job: library images in, captions with provenance out.

:func:`run_caption_job` follows the core job contract (``progress``, ``cancel``):

* **Selection** happens in SQL at the start, from the library's current state, so a job
  that was interrupted resumes by simply running again: images the same model version
  (base model + adapter) already captioned are skipped.  Images whose current caption
  a person wrote are never selected, and a person's caption that appears *while* the
  job runs is still protected (``core.captions.add_model_caption`` files the model's
  text as history then).  Imported captions are kept too.
* **Decoding ahead of the model** on an accelerator: worker threads decode (JPEG draft
  mode at the model's input scale) and run the processor for the next batches while the
  GPU works on this one.  On a CPU device decoding runs in line (see _InlineExecutor).
* **Resilience**: an image that cannot be decoded is marked ``error`` with the reason
  and the batch goes on without it; CUDA out-of-memory halves the batch size and retries
  (down to one image); any other failure of a batch is retried image by image, so one
  bad input costs one error.  A :class:`ModelLoadError` from ``generate`` (a model
  server that went away or refuses the key, see core.captioning.server) stops the job:
  retrying image by image would only turn one outage into an error on every image.
* **Commits per batch** in a short write session, so cancel (checked between batches)
  or a crash loses at most the batch in flight.
* **Concurrent runs share the work**: each batch is claimed before it is decoded
  (:mod:`core.captioning.claims`), so a second run on the same library captions the
  images the first does not hold, and none twice.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import select, update

from core.allocator import release_free_memory
from core.captioning.batching import _BatchCaptioner, _decode_executor, _prefetch
from core.captioning.calibration import with_photo_features
from core.captioning.claims import CaptionClaims
from core.captioning.confidence import TokenCalibration, check_views, confidence_score
from core.captioning.job_spec import CaptionJobSpec, GenerationSettings
from core.captioning.prompting import (
    PromptPlan,
    check_family_writes_kind,
    check_trained_kind,
    kind_request,
    plan_for_kind,
    plan_prompt,
    prompt_batches,
    render_prompts,
)
from core.captioning.registry import ResolvedModel, resolve_model
from core.captions import DEFAULT_MODEL_CAPTION_CHARS, add_model_caption, caption_too_long
from core.filenames import for_display, to_os
from core.jobs import NEVER_CANCELLED, CancelToken, JobStats, ProgressCallback, no_progress, not_counted
from core.kinds import CAPTION, CaptionKind, get_kind, length_check
from core.models import CaptionSource, Image, ImageState
from core.queries import CURRENT_JOIN, IN_CHUNK, ImageFilter, current_join, filter_sql
from core.scanner import recheck_errors

if TYPE_CHECKING:
    from core.library import Library

log = logging.getLogger(__name__)

@dataclass
class CaptionJobStats(JobStats):
    """What a caption job did; ``problems`` names each image that failed and why."""

    TITLE: ClassVar[str] = "Captioning"

    captioned: int = 0
    skipped: int = 0
    errors: int = 0
    seconds: float = 0.0
    final_batch_size: int = not_counted()
    #: Of ``skipped``: images another run captioning this library at the same time held, or
    #: that no longer needed this caption when their batch came (core.captioning.claims).
    left_to_other_runs: int = not_counted()
    #: Values stored but longer than their kind advises (alt text): "path: note: ..." lines.
    notes: list[str] = field(default_factory=list)


def describe_scope(scope: Any) -> dict[str, Any] | None:
    """The scope as the job record keeps it (plain JSON; ids are counted, not listed)."""
    if scope is None:
        return None
    if isinstance(scope, ImageFilter):
        return {
            "states": sorted(scope.states), "root_id": scope.root_id, "folder": scope.folder,
            "text": scope.text or None, "model": scope.model.label() if scope.model else None,
            "min_score": scope.min_score, "max_score": scope.max_score,
        }
    return {"images": len(scope)}


def select_images(
    library: Library, spec: CaptionJobSpec, resolved: ResolvedModel
) -> tuple[list[tuple[int, str]], int]:
    """``([(image_id, absolute_path)], skipped)`` for the spec's scope, in path order.

    Missing and unreadable files are not in scope (the scan reported them); images in
    error were re-checked just before (:func:`core.scanner.recheck_errors`), so one whose
    cause went away is back in scope.
    Selected: readable images with no caption, or whose current caption is a model's
    (unless this very model version wrote it and ``overwrite_model_captions`` is off:
    that is how a re-run resumes).  Never a person's caption or an imported one.
    "skipped" counts the readable images in scope that are not selected.

    Filtering and path building happen in SQL on plain driver rows: on a 100k-image
    library this runs on the inference thread while the GUI paints, and a Python loop
    over ORM rows held the GIL long enough to stall the window (see
    docs/optimization-notes.md, "Selecting images in SQL").
    """
    # The job's own parameters are named job_*: an ImageFilter scope fills its own.
    wanted = {
        "job_ok": ImageState.OK.value,
        "job_model_source": CaptionSource.MODEL.value,
        "job_keep_own": int(not spec.overwrite_model_captions),
        "job_model": resolved.model_name,
        "job_adapter": resolved.adapter,
        "job_sep": os.sep,
    }
    in_scope_sql = f"{current_join(spec.kind)} JOIN library_roots r ON r.id = i.root_id WHERE i.state = :job_ok"
    selected_only = (
        " AND (c.id IS NULL OR (c.source = :job_model_source"
        " AND NOT (:job_keep_own AND c.model_name IS :job_model AND c.adapter IS :job_adapter)))"
    )
    chunks: list[tuple[str, dict[str, Any]]]
    if isinstance(spec.scope, ImageFilter) and spec.scope.kind != spec.kind:
        # A view of another kind (the grid's): its filter reads that kind's values.
        params: dict[str, Any] = {}
        chunks = [(f" AND i.id IN (SELECT i.id{current_join(spec.scope.kind)} WHERE {filter_sql(spec.scope, params)})",
                   params)]
    elif isinstance(spec.scope, ImageFilter):
        params = {}
        chunks = [(f" AND {filter_sql(spec.scope, params)}", params)]
    elif spec.scope is not None:
        ids = spec.scope
        chunks = [
            (f" AND i.id IN ({','.join(str(int(x)) for x in ids[start : start + IN_CHUNK])})", {})
            for start in range(0, len(ids), IN_CHUNK)
        ]
    else:
        chunks = [("", {})]
    rows: list[tuple[str, int]] = []
    in_scope = 0
    with library.db.read() as session:
        # The driver's own cursor (inside the session's transaction): plain tuples,
        # fetched and sorted in C.
        cursor = session.connection().connection.dbapi_connection.cursor()
        try:
            for where, params in chunks:
                values = {**params, **wanted}
                in_scope += cursor.execute(f"SELECT count(*){in_scope_sql}{where}", values).fetchone()[0]
                cursor.execute(
                    f"SELECT r.path || :job_sep || i.rel_path, i.id{in_scope_sql}{where}{selected_only}",
                    values,
                )
                rows.extend(cursor.fetchall())
        finally:
            cursor.close()
    rows.sort()
    # Stored paths → OS names (a name that is not valid UTF-8 is stored escaped).
    selected = [(image_id, to_os(path)) for path, image_id in rows]
    return selected, in_scope - len(selected)


def job_kind(library: Library, spec: CaptionJobSpec) -> CaptionKind:
    """The kind the spec writes (``KindError`` naming the library's kinds if it has none such)."""
    with library.db.read() as session:
        return get_kind(session, spec.kind)


def prompt_plan(spec: CaptionJobSpec, resolved: ResolvedModel, captioner: Any,
                kind: CaptionKind | None = None) -> PromptPlan:
    """The job's preset/template for the loaded family: the spec's, else the kind's default
    (or, for captions, the trained version's).

    ``UnsupportedPresetError`` (a ``ValueError``) when the family cannot follow the preset,
    ``UnsupportedKindError`` when it cannot be asked for the kind.
    """
    return plan_for_kind(getattr(captioner, "family", None), kind or CaptionKind(CAPTION, "Caption"),
                         preset=spec.preset, template=spec.prompt_template,
                         model_type=getattr(captioner, "model_type", None), trained=resolved.trained_prompt,
                         explicit_prompt=spec.generation.prompt is not None, trained_kind=resolved.trained_kind)


def check_prompt_without_loading(spec: CaptionJobSpec, resolved: ResolvedModel,
                                 kind: CaptionKind | None = None) -> None:
    """Raise ``UnsupportedPresetError`` (``UnsupportedKindError``) when the spec's preset
    (kind) cannot be asked of the model's family, if that family is known from its
    config.json alone (no download)."""
    kind = kind or CaptionKind(CAPTION, "Caption")
    check_trained_kind(kind, resolved.trained_kind, f"'{spec.model}'")
    # A version trained on the kind writes it whether or not its family can be asked for it.
    learnt = kind.name != CAPTION and resolved.trained_kind == kind.name
    preset, template = (spec.preset, spec.prompt_template) if learnt else kind_request(
        kind, spec.preset, spec.prompt_template)
    if (preset is None and template is None) or spec.backend != "local":
        return
    from core.captioning.registry import family_hint

    family = family_hint(resolved.model_name)
    if family is not None:
        if not learnt:
            check_family_writes_kind(family, kind, preset, template)
        plan_prompt(family, preset=preset, template=template)


def image_prompts(library: Library, plan: PromptPlan, selected: list[tuple[int, str]]) -> list[str | None]:
    """Each selected image's rendered prompt, in order.  Current captions, when the plan
    uses them, are fetched in one query per chunk of ids; no query per image."""
    current: dict[int, str] = {}
    if plan.template is not None and plan.needs_current_caption:
        ids = [image_id for image_id, _ in selected]
        with library.db.read() as session:
            cursor = session.connection().connection.dbapi_connection.cursor()
            try:
                for start in range(0, len(ids), IN_CHUNK):
                    chunk = ",".join(str(int(x)) for x in ids[start : start + IN_CHUNK])
                    cursor.execute(f"SELECT i.id, c.text{CURRENT_JOIN} WHERE i.id IN ({chunk})")
                    current.update((i, t) for i, t in cursor.fetchall() if t is not None)
            finally:
                cursor.close()
    return render_prompts(plan, [path for _, path in selected], [current.get(image_id) for image_id, _ in selected])


def run_caption_job(
    library: Library,
    spec: CaptionJobSpec,
    *,
    resolved: ResolvedModel | None = None,
    captioner: Any | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken = NEVER_CANCELLED,
    on_batch: Callable[[list[int]], None] | None = None,
) -> CaptionJobStats:
    """Caption the images *spec* selects; see the module docstring.

    *resolved*: ``resolve_model(library, spec.model, spec.adapter)`` when the caller
    already resolved it (the GUI's worker does, to load that model), so it is resolved
    once.  *captioner*: an already-loaded captioner to reuse (the GUI's long-lived worker
    keeps one); None loads the resolved model (+ adapter).  *on_batch* receives the ids
    of the images whose captions changed, after each committed batch (from this thread).
    """
    started = time.monotonic()
    if resolved is None:
        resolved = resolve_model(library, spec.model, spec.adapter, spec.backend)
    if captioner is None and spec.backend == "local":
        # A model that cannot be resolved (a mistyped --model) is an error at once, even
        # with nothing to caption, before the job is recorded and without the hub's
        # network retries; no weights are read.
        from core.captioning.registry import check_model_without_loading

        check_model_without_loading(resolved.model_name, resolved.adapter)
    kind = job_kind(library, spec)
    check_trained_kind(kind, resolved.trained_kind, f"'{spec.model}'")
    with library.job("caption", caption_job_params(spec, resolved), CaptionJobStats(), progress) as run:
        stats = run.stats
        selected, stats.skipped = select_pending_images(library, spec, resolved)
        total = len(selected)
        run.save(total=total)

        def report(message: str) -> None:
            # Once per batch: not throttled.
            run.progress(stats.captioned + stats.errors, total, message, force=True)

        report("Loading model" if captioner is None and selected else "Starting")
        if not selected:
            # Nothing to caption, but a preset the model cannot follow is still an error
            # (it would be on the next run that has work): checked when the family is known
            # without loading (a model folder or the local cache).
            check_prompt_without_loading(spec, resolved, kind)
            stats.seconds = time.monotonic() - started
            return stats

        owns_captioner = captioner is None
        claims = CaptionClaims(library, run.job_id, spec, resolved)

        def claimed(batches: list[tuple[GenerationSettings, list[tuple[int, str]]]]) -> Iterator[
                tuple[GenerationSettings, list[tuple[int, str]]]]:
            # Claimed as each batch goes to decoding: a concurrent run takes the others.
            nonlocal total
            for batch_settings, batch in batches:
                mine = claims.take(batch)
                if len(mine) < len(batch):
                    stats.skipped += len(batch) - len(mine)
                    stats.left_to_other_runs += len(batch) - len(mine)
                    total -= len(batch) - len(mine)
                if mine:
                    yield batch_settings, mine

        if captioner is None and spec.backend == "openai":
            from core.captioning.server import load_server_captioner

            captioner = load_server_captioner(
                spec.endpoint or "", resolved.model_name, max_concurrency=spec.max_concurrency,
                timeout=spec.server_timeout, max_caption_chars=spec.max_caption_chars,
                progress=lambda message: report(message),
            )
        elif captioner is None:
            from core.captioning import load_captioner

            captioner = load_captioner(
                resolved.model_name,
                adapter=resolved.adapter,
                device=spec.device,
                optimize=spec.optimize,
                runtime=spec.runtime,
                progress=lambda message: report(message),
            )
        plan = prompt_plan(spec, resolved, captioner, kind)
        prompts = image_prompts(library, plan, selected)
        provenance = caption_provenance(captioner, spec.generation)
        runner = _BatchCaptioner(captioner, spec.generation, spec.batch_size)
        # Only a version with an error model reads the photo measurements (a few ms a photo).
        measure_photos = bool((resolved.score_calibration or {}).get("error_model"))
        try:
            with _decode_executor(captioner) as pool:
                batches = prompt_batches(selected, prompts, spec.batch_size, spec.generation)
                futures = _prefetch(pool, captioner, claimed(batches))
                for future in futures:
                    if cancel.is_set():
                        stats.cancelled = True
                        break
                    prepared = future.result()
                    runner.settings = prepared.settings
                    results = runner.caption(prepared.images, prepared.inputs) if prepared.images else []
                    if spec.check_views and results:
                        results = check_views(captioner, prepared.settings, prepared.images, results,
                                              spec.check_views)
                    if measure_photos and results:
                        results = with_photo_features(prepared.images, results)
                    changed = commit_caption_batch(library, prepared.image_ids, results, prepared.failures,
                                                   resolved, batch_provenance(provenance, plan, prepared.settings),
                                                   stats, plan, max_chars=spec.max_caption_chars)
                    run.save(done=stats.captioned + stats.errors, checkpoint=stats.counts())
                    if on_batch is not None and changed:
                        on_batch(changed)
                    report("Captioning")
                if stats.cancelled:
                    for future in futures:  # drop the decoded-ahead batches
                        future.cancel()
        finally:
            claims.release()
            if owns_captioner:
                captioner.close()
            else:
                # A kept captioner's freed activations go back to the OS between jobs.
                release_free_memory()
        stats.final_batch_size = runner.batch_size
        stats.seconds = time.monotonic() - started
        report("Cancelled" if stats.cancelled else "Finished")
    return stats


def caption_job_params(spec: CaptionJobSpec, resolved: ResolvedModel) -> dict[str, Any]:
    """The caption job record's parameters (``library.job("caption", ...)``), for every runner."""
    params = {
        "model": resolved.model_name,
        "adapter": resolved.adapter,
        "settings": spec.generation.to_dict(),
        "preset": spec.preset,
        "prompt_template": spec.prompt_template,
        "kind": spec.kind,
        "batch_size": spec.batch_size,
        "device": spec.device,
        "runtime": spec.runtime,
        "overwrite_model_captions": spec.overwrite_model_captions,
        "max_caption_chars": spec.max_caption_chars,
        "scope": describe_scope(spec.scope),
    }
    if spec.backend != "local":
        # The endpoint was validated credential- and query-free; the key is never here.
        params.update(backend=spec.backend, endpoint=spec.endpoint, max_concurrency=spec.max_concurrency,
                      server_timeout=spec.server_timeout)
    return params


def select_pending_images(
    library: Library, spec: CaptionJobSpec, resolved: ResolvedModel
) -> tuple[list[tuple[int, str]], int]:
    """:func:`select_images` after re-checking the scope's error images: what a job
    (in-process or on Ray) captions, and how many it skips."""
    # An error whose cause went away (file restored, made readable) must not stick.
    if isinstance(spec.scope, ImageFilter):
        recheck_errors(library.db, root_ids=[spec.scope.root_id] if spec.scope.root_id is not None else None)
    else:
        recheck_errors(library.db, image_ids=spec.scope)
    return select_images(library, spec, resolved)


def caption_provenance(captioner: Any, settings: GenerationSettings) -> dict[str, Any]:
    """The ``settings`` provenance stored with each caption *captioner* wrote (before the
    batch's own prompt: :func:`batch_provenance`)."""
    return {
        "generation": settings.to_dict(),
        "identity": dict(getattr(captioner, "identity", {}) or {}),
        "device": str(getattr(captioner, "device", "")),
        "dtype": str(getattr(captioner, "dtype", "")),
    }


def batch_provenance(provenance: dict[str, Any], plan: PromptPlan, settings: GenerationSettings) -> dict[str, Any]:
    """*provenance* for one batch: its generation settings (with its prompt), the preset and
    the rendered prompt (a template's, per batch)."""
    return {**provenance, "generation": settings.to_dict(),
            **plan.provenance(settings.prompt if plan.template else None)}


def commit_caption_batch(
    library: Library,
    image_ids: Sequence[int],
    results: Sequence[Any],
    failures: Sequence[tuple[int, str]],
    resolved: ResolvedModel,
    provenance: dict[str, Any],
    stats: CaptionJobStats,
    plan: PromptPlan | None = None,
    *,
    max_chars: int = DEFAULT_MODEL_CAPTION_CHARS,
) -> list[int]:
    """Write one batch's captions and errors in one transaction; the ids that changed.

    *results*: per id of *image_ids*, a ``CaptionResult`` (``text``, ``score``, token
    log-probabilities) or the exception captioning that image raised (an error; its caption
    stays current).  *failures*: ``(image_id, reason)`` of images that did not decode
    (marked ``error``).  The one commit of model captions for every runner (in-process and
    Ray), so provenance, the preset's finishing (``plan.finish``), the stored confidence
    (:func:`core.captioning.confidence.confidence_score`, calibrated for a trained version;
    its kind and every kind's value go into the provenance) and the
    never-overwrite-a-person rule (``add_model_caption``) live here.  A caption longer
    than *max_chars* is that image's error (one problem line), never stored cut short.
    """
    calibration = TokenCalibration.from_dict(resolved.score_calibration)
    changed: list[int] = []
    with library.db.write() as session:
        for image_id, reason in failures:
            _mark_error(session, image_id, reason, stats)
            changed.append(image_id)
        for image_id, result in zip(image_ids, results, strict=True):
            if isinstance(result, BaseException):
                _mark_error(session, image_id, f"captioning failed: {result}", stats, keep_state=True)
                changed.append(image_id)
                continue
            if not result.text or not result.text.strip():
                # Nothing generated (e.g. a broken tokenizer): an error for this image,
                # and the caption it had stays current.
                _mark_error(session, image_id, "captioning failed: the model generated an empty caption",
                            stats, keep_state=True)
                changed.append(image_id)
                continue
            text = plan.finish(result.text) if plan is not None else result.text
            too_long = caption_too_long(text, max_chars)
            if too_long is not None:
                _mark_error(session, image_id, f"captioning failed: {too_long}", stats, keep_state=True)
                changed.append(image_id)
                continue
            # A server that returns no token log-probabilities gives no score.
            score, score_kind, scores = (confidence_score(result, calibration) if result.score is not None
                                         else (None, None, {}))
            value_kind = plan.kind if plan is not None else CAPTION
            check = length_check(value_kind, text)
            if check is not None:
                path = session.scalar(select(Image.rel_path).where(Image.id == image_id))
                stats.notes.append(f"{for_display(path or '?')}: {check.level}: {check.message}")
            add_model_caption(
                session,
                image_id,
                text,
                model_name=resolved.model_name,
                adapter=resolved.adapter,
                model_version_id=resolved.model_version_id,
                provenance={**provenance, "score_kind": score_kind, "scores": {k: round(v, 5) for k, v in scores.items()},
                            "length_check": check.level if check is not None else None},
                score=float(score) if score is not None else None,
                kind=value_kind,
            )
            stats.captioned += 1
            changed.append(image_id)
    return changed


def _mark_error(session: Any, image_id: int, reason: str, stats: CaptionJobStats, *, keep_state: bool = False) -> None:
    stats.errors += 1
    path = session.scalar(select(Image.rel_path).where(Image.id == image_id))
    stats.problems.append(f"{for_display(path or '?')}: {reason}")
    if not keep_state:
        # The file itself is bad: show it as an error image in the library.
        session.execute(
            update(Image).where(Image.id == image_id).values(state=ImageState.ERROR.value, error=reason)
        )
