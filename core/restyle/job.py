"""The restyle job: model captions in, the same captions rewritten in a style out.

:func:`run_restyle_job` follows the core job contract (``progress``, ``cancel``) like the
caption job (:mod:`core.captioning.engine`):

* **Selection** in SQL at the start: images in the scope whose *current* caption a model
  wrote.  A person's caption is never restyled (nor an imported one), and a person's
  caption that appears while the job runs is still protected
  (:func:`core.captions.add_model_caption` files the restyled text as history then).
  Captions this restyler already wrote in this style are skipped, so an interrupted job
  resumes by running again.  The text restyled is always the first stage's description
  (a restyled caption's recorded source text), never a restyled text again.
* **Batches** go through the restyler (left-padded batched generation, or concurrent
  server requests); a text that fails is that image's error and the batch goes on.
* **Commits per batch** in a short write session: cancel (checked between batches, which
  is also where the GUI's pause token holds) loses at most the batch in flight.
* **Provenance names both stages**: the row keeps the captioner's model, adapter and
  version (so the caption job still counts the image as captioned by that model), and
  ``provenance`` keeps the captioner's record plus a ``restyle`` record (restyler, its
  adapter and version, style prompt, the source caption and its text and score).  The
  stored confidence is the restyler's (its mean token log-probability).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from core.captioning.confidence import confidence_score
from core.captions import DEFAULT_MODEL_CAPTION_CHARS, CaptionError, add_model_caption, caption_too_long
from core.filenames import for_display
from core.jobs import NEVER_CANCELLED, CancelToken, JobStats, ProgressCallback, no_progress
from core.models import CaptionSource, Image
from core.queries import CURRENT_JOIN, IN_CHUNK, ImageFilter, filter_sql

from .spec import RESTYLE_KEY, ResolvedRestyler, RestyleSpec, resolve_restyler

if TYPE_CHECKING:
    from core.library import Library


@dataclass
class RestyleJobStats(JobStats):
    """What a restyle job did; ``problems`` names each caption that failed and why."""

    TITLE: ClassVar[str] = "Restyling"

    restyled: int = 0
    skipped: int = 0
    errors: int = 0
    seconds: float = 0.0


@dataclass
class TwoStageStats:
    """A caption job followed by its restyle stage, read like one job's stats (summary, problems, errors)."""

    captioning: Any
    restyling: RestyleJobStats | None = None

    @property
    def stages(self) -> list[Any]:
        return [s for s in (self.captioning, self.restyling) if s is not None]

    @property
    def cancelled(self) -> bool:
        return any(s.cancelled for s in self.stages)

    @property
    def errors(self) -> int:
        return sum(int(s.errors) for s in self.stages)

    @property
    def problems(self) -> list[str]:
        return [p for s in self.stages for p in s.problems]

    def counts(self) -> dict[str, int]:
        return {**self.captioning.counts(), **({"restyled": self.restyling.restyled} if self.restyling else {}),
                "errors": self.errors}

    def summary(self) -> str:
        return "; ".join(s.summary() for s in self.stages)


@dataclass(frozen=True)
class PendingCaption:
    """A current model caption to restyle."""

    image_id: int
    caption_id: int
    #: The first stage's description (what the restyler reads).
    source_text: str
    #: The stored provenance of the caption it replaces, whose captioner part is kept.
    settings: dict[str, Any]
    model_name: str | None
    adapter: str | None
    model_version_id: int | None
    score: float | None


def select_captions(library: Library, spec: RestyleSpec, resolved: ResolvedRestyler) -> tuple[list[PendingCaption], int]:
    """``(captions to restyle, skipped)`` for *spec*'s scope, in image order (see the module docstring)."""
    wanted = {"job_model": CaptionSource.MODEL.value}
    where: list[tuple[str, dict[str, Any]]]
    if isinstance(spec.scope, ImageFilter):
        params: dict[str, Any] = {}
        where = [(f" AND {filter_sql(spec.scope, params)}", params)]
    elif spec.scope is not None:
        ids = list(spec.scope)
        where = [(f" AND i.id IN ({','.join(str(int(x)) for x in ids[s : s + IN_CHUNK])})", {})
                 for s in range(0, len(ids), IN_CHUNK)]
    else:
        where = [("", {})]
    mine = resolved.provenance()
    pending: list[PendingCaption] = []
    in_scope = 0
    with library.db.read() as session:
        cursor = session.connection().connection.dbapi_connection.cursor()
        try:
            for clause, params in where:
                values = {**params, **wanted}
                in_scope += cursor.execute(f"SELECT count(*){CURRENT_JOIN} WHERE c.id IS NOT NULL{clause}",
                                           values).fetchone()[0]
                cursor.execute(
                    "SELECT i.id, c.id, c.text, c.provenance, c.model_name, c.adapter, c.model_version_id, c.score"
                    f"{CURRENT_JOIN} WHERE c.source = :job_model{clause}", values)
                for image_id, caption_id, text, raw, model, adapter, version_id, score in cursor.fetchall():
                    settings = json.loads(raw) if raw else {}
                    done = settings.get(RESTYLE_KEY) if isinstance(settings, dict) else None
                    if isinstance(done, dict) and all(done.get(k) == mine[k] for k in ("restyler", "adapter", "style")):
                        continue  # this restyler already wrote it in this style: a rerun resumes past it
                    source = done.get("source_text") if isinstance(done, dict) else None
                    pending.append(PendingCaption(image_id, caption_id, source or text,
                                                  settings if isinstance(settings, dict) else {},
                                                  model, adapter, version_id, score))
        finally:
            cursor.close()
    pending.sort(key=lambda p: p.image_id)
    return pending, in_scope - len(pending)


def last_caption_id(library: Library) -> int:
    """The newest caption row's id (0 in an empty library): what a caption job about to start writes comes after it."""
    with library.db.read() as session:
        cursor = session.connection().connection.dbapi_connection.cursor()
        try:
            return int(cursor.execute("SELECT coalesce(max(id), 0) FROM captions").fetchone()[0])
        finally:
            cursor.close()


def written_after(library: Library, image_ids: Sequence[int], after_id: int) -> list[int]:
    """Those of *image_ids* whose current caption is a model caption newer than row *after_id*.

    The restyle stage of a caption job restyles what that job wrote: an image whose captioning
    failed keeps an older model caption, which is not this job's to restyle."""
    ids = sorted(set(image_ids))
    found: list[int] = []
    with library.db.read() as session:
        cursor = session.connection().connection.dbapi_connection.cursor()
        try:
            for start in range(0, len(ids), IN_CHUNK):
                chunk = ",".join(str(int(x)) for x in ids[start : start + IN_CHUNK])
                cursor.execute(f"SELECT i.id{CURRENT_JOIN} WHERE c.source = :model AND c.id > :after"
                               f" AND i.id IN ({chunk})", {"model": CaptionSource.MODEL.value, "after": after_id})
                found.extend(row[0] for row in cursor.fetchall())
        finally:
            cursor.close()
    return sorted(found)


def load_for_spec(spec: RestyleSpec, resolved: ResolvedRestyler, progress: Callable[[str], None] | None = None) -> Any:
    """The restyler *resolved* names, loaded (local model) or connected (server)."""
    from .model import load_restyler, load_server_restyler

    if spec.backend == "openai":
        return load_server_restyler(spec.endpoint or "", resolved.model_name, max_concurrency=spec.max_concurrency,
                                    timeout=spec.server_timeout, progress=progress)
    return load_restyler(resolved.model_name, resolved.adapter, device=spec.device, progress=progress)


def run_restyle_job(
    library: Library,
    spec: RestyleSpec,
    *,
    restyler: Any | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken = NEVER_CANCELLED,
    on_batch: Callable[[list[int]], None] | None = None,
    max_chars: int = DEFAULT_MODEL_CAPTION_CHARS,
) -> RestyleJobStats:
    """Restyle the model captions *spec* selects; see the module docstring.

    *restyler*: an already-loaded restyler to reuse (the GUI's model thread keeps one);
    None loads it and closes it at the end.  *on_batch* gets the ids of the images whose
    captions changed after each committed batch.
    """
    started = time.monotonic()
    resolved = resolve_restyler(library, spec)
    with library.job("restyle", spec.describe(), RestyleJobStats(), progress) as run:
        stats = run.stats
        pending, stats.skipped = select_captions(library, spec, resolved)
        total = len(pending)
        run.save(total=total)

        def report(message: str) -> None:
            run.progress(stats.restyled + stats.errors, total, message, force=True)

        if not pending:
            report("Nothing to restyle")
            stats.seconds = time.monotonic() - started
            return stats
        owns = restyler is None
        if restyler is None:
            report("Loading restyler")
            restyler = load_for_spec(spec, resolved, report)
        provenance = {**resolved.provenance(), "device": str(getattr(restyler, "device", "")),
                      "dtype": str(getattr(restyler, "dtype", "") or "").removeprefix("torch.")}
        try:
            for start in range(0, total, spec.batch_size):
                if cancel.is_set():
                    stats.cancelled = True
                    break
                batch = pending[start : start + spec.batch_size]
                results = _restyle_batch(restyler, [p.source_text for p in batch], resolved)
                changed = commit_restyled(library, batch, results, provenance, stats, max_chars=max_chars)
                run.save(done=stats.restyled + stats.errors, checkpoint=stats.counts())
                if on_batch is not None and changed:
                    on_batch(changed)
                report("Restyling")
        finally:
            if owns:
                restyler.close()
        stats.seconds = time.monotonic() - started
        report("Cancelled" if stats.cancelled else "Finished")
    return stats


def _restyle_batch(restyler: Any, texts: list[str], resolved: ResolvedRestyler) -> list[Any]:
    """One result per text; a failing batch is retried text by text, so one bad text is one error."""
    from core.captioning.errors import ModelLoadError

    try:
        return list(restyler.restyle(texts, resolved.settings))
    except ModelLoadError:
        raise  # the server went away or refuses the key: the job stops, nothing is lost
    except Exception:  # noqa: BLE001 - retried one by one below
        if len(texts) == 1:
            raise
    results: list[Any] = []
    for text in texts:
        try:
            results.extend(restyler.restyle([text], resolved.settings))
        except ModelLoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - that text's error
            results.append(exc)
    return results


def commit_restyled(library: Library, batch: Sequence[PendingCaption], results: Sequence[Any],
                    provenance: dict[str, Any], stats: RestyleJobStats, *,
                    max_chars: int = DEFAULT_MODEL_CAPTION_CHARS) -> list[int]:
    """Write one batch's restyled captions in one transaction; the image ids that changed.

    A failure, an empty text or one longer than *max_chars* is that image's problem and
    its caption stays as it was.
    """
    from sqlalchemy import select

    changed: list[int] = []
    with library.db.write() as session:
        for pending, result in zip(batch, results, strict=True):
            problem = None
            if isinstance(result, BaseException):
                problem = f"restyling failed: {result}"
            elif not result.text or not result.text.strip():
                problem = "restyling failed: the restyler generated an empty caption"
            else:
                problem = caption_too_long(result.text, max_chars)
            if problem is not None:
                stats.errors += 1
                path = session.scalar(select(Image.rel_path).where(Image.id == pending.image_id))
                stats.problems.append(f"{for_display(path or '?')}: {problem}")
                continue
            score, kind, scores = (confidence_score(result) if result.score is not None else (None, None, {}))
            record = {**provenance, "source_caption_id": pending.caption_id, "source_text": pending.source_text,
                      "captioner_score": pending.score, "score_kind": kind,
                      "scores": {k: round(v, 5) for k, v in scores.items()}}
            first_stage = {k: v for k, v in pending.settings.items() if k != RESTYLE_KEY}
            try:
                add_model_caption(
                    session, pending.image_id, result.text.strip(), model_name=pending.model_name or "?",
                    adapter=pending.adapter, model_version_id=pending.model_version_id,
                    provenance={**first_stage, RESTYLE_KEY: record},
                    score=float(score) if score is not None else None)
            except CaptionError as exc:
                stats.errors += 1
                stats.problems.append(f"image {pending.image_id}: restyling failed: {exc}")
                continue
            stats.restyled += 1
            changed.append(pending.image_id)
    return changed
