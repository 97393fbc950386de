"""Concurrent caption runs on one library share the work instead of doubling it.

A run claims each batch before captioning it, in one ``BEGIN IMMEDIATE`` transaction
(:class:`CaptionClaims`): images that another live run of the same model holds are left
to that run, and images that no longer need this model's caption (another run captioned
them since this one selected them) are dropped; the rest are claimed and captioned.  Both
count as skipped.  Two runs started together therefore take turns batch by batch, and each
image is captioned once.

A claim counts while its job is "running" and its process lives: on this host the job's
process id is checked; for a job of another host (a library on a network share) its record
must have been updated within :data:`CLAIM_LEASE` (every batch updates it).  So a crashed
run's claims never block another run.  A job's claims are deleted when it ends, with those
of jobs no longer running.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from core.kinds import CAPTION
from core.models import CaptionSource, ImageState, Job, JobState, utcnow
from core.queries import IN_CHUNK, current_join

if TYPE_CHECKING:
    from core.captioning.job_spec import CaptionJobSpec
    from core.captioning.registry import ResolvedModel
    from core.library import Library

#: How long another host's run keeps its claims without updating its job record.
CLAIM_LEASE = timedelta(minutes=30)

_STAMP = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores DATETIME in SQLite


def _stamp(moment: datetime) -> str:
    return moment.strftime(_STAMP)


class CaptionClaims:
    """The claims of one caption job (``job_id``) for *resolved*'s model on *library*."""

    def __init__(self, library: Library, job_id: int, spec: CaptionJobSpec, resolved: ResolvedModel) -> None:
        self.library = library
        self.job_id = job_id
        self.model = resolved.model_name
        self.adapter = resolved.adapter
        self.keep_own = not spec.overwrite_model_captions
        self.kind = spec.kind
        self.since = utcnow()
        if job_id:
            with library.db.read() as session:
                self.since = session.scalar(select(Job.created_at).where(Job.id == job_id)) or self.since

    def take(self, candidates: Sequence[tuple[int, str]]) -> list[tuple[int, str]]:
        """The candidates this job may caption now, claimed; in their order."""
        if not candidates or not self.job_id:
            return list(candidates)  # a job without a record (read-only library) cannot claim
        taken: list[tuple[int, str]] = []
        with self.library.db.write() as session:
            cursor = session.connection().connection.dbapi_connection.cursor()
            try:
                for start in range(0, len(candidates), IN_CHUNK):
                    chunk = candidates[start : start + IN_CHUNK]
                    ids = ",".join(str(int(image_id)) for image_id, _path in chunk)
                    held = self._held_elsewhere(cursor, ids)
                    pending = self._still_pending(cursor, ids)
                    mine = [item for item in chunk if item[0] in pending and item[0] not in held]
                    now = _stamp(utcnow())
                    cursor.executemany(
                        "INSERT OR REPLACE INTO caption_claims (job_id, image_id, claimed_at) VALUES (?, ?, ?)",
                        [(self.job_id, image_id, now) for image_id, _path in mine],
                    )
                    taken.extend(mine)
            finally:
                cursor.close()
        return taken

    def release(self) -> None:
        """Delete this job's claims, and those of every job no longer running."""
        if not self.job_id:
            return
        with self.library.db.write() as session:
            session.connection().exec_driver_sql(
                "DELETE FROM caption_claims WHERE job_id = ? OR job_id IN "
                "(SELECT id FROM jobs WHERE state <> ?)",
                (self.job_id, JobState.RUNNING.value),
            )

    def _held_elsewhere(self, cursor: Any, ids: str) -> set[int]:
        """Of *ids*, those a live run of the same model and adapter has claimed."""
        rows = cursor.execute(
            "SELECT cc.image_id, j.id, j.params, j.updated_at FROM caption_claims cc JOIN jobs j ON j.id = cc.job_id "
            f"WHERE cc.image_id IN ({ids}) AND cc.job_id <> ? AND j.state = ?",
            (self.job_id, JobState.RUNNING.value),
        ).fetchall()
        live: dict[int, bool] = {}
        held: set[int] = set()
        for image_id, job_id, params, updated_at in rows:
            if job_id not in live:
                live[job_id] = self._same_work_alive(params, updated_at)
            if live[job_id]:
                held.add(image_id)
        return held

    def _same_work_alive(self, params_text: str | None, updated_at: Any) -> bool:
        from core.library import job_owner_is_gone

        try:
            params = json.loads(params_text or "{}") or {}
        except ValueError:
            return False
        if (params.get("model") != self.model or params.get("adapter") != self.adapter
                or params.get("kind", CAPTION) != self.kind):
            return False  # another model's (or kind's) run: its caption is another row, not this one's work
        owner = params.get("_owner") or {}
        if isinstance(owner, dict) and owner.get("host") == socket.gethostname():
            return not job_owner_is_gone(params)
        return str(updated_at or "") >= _stamp(utcnow() - CLAIM_LEASE)

    def _still_pending(self, cursor: Any, ids: str) -> set[int]:
        """Of *ids*, those still needing this model's caption: readable, no caption by a person
        or an import, and not captioned by this model already (by this job or, with
        overwrite, by another run since this job started)."""
        rows = cursor.execute(
            f"SELECT i.id{current_join(self.kind)} WHERE i.id IN ({ids}) AND i.state = ? AND (c.id IS NULL OR "
            "(c.source = ? AND NOT (c.model_name IS ? AND c.adapter IS ? AND (? OR c.created_at >= ?))))",
            (ImageState.OK.value, CaptionSource.MODEL.value, self.model, self.adapter, int(self.keep_own),
             _stamp(self.since)),
        ).fetchall()
        return {row[0] for row in rows}
