"""The contract every long-running core job follows.

A job is a plain function that takes a ``progress`` callback and a ``cancel`` token:

* ``cancel`` is anything with ``is_set() -> bool`` (a :class:`threading.Event` works).
  Jobs check it between batches and stop promptly, keeping what they already committed.
* ``progress`` receives :class:`Progress` snapshots.  Jobs call it at most once per
  batch (and throttle it), so a GUI can forward it as a signal without a storm.

Jobs write their results in batches through their own short database sessions, and
record themselves in the ``jobs`` table so an interrupted job can be resumed: a job runs
inside ``with library.job(kind, params, stats, progress) as run`` (a :class:`JobRun`),
which throttles its progress, collects its problems in its :class:`JobStats` and
finishes the record however the block ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Generic, Protocol, TypeVar


class CancelToken(Protocol):
    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class Progress:
    """A snapshot of a job's progress."""

    done: int
    total: int | None = None
    message: str = ""
    #: Counters a job wants to show (e.g. ``{"errors": 3, "skipped": 10}``).
    counts: dict[str, int] = field(default_factory=dict)
    #: Items per second over the job's lifetime so far, when the job measures it.
    rate: float | None = None

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, self.done / self.total)

    @property
    def eta_seconds(self) -> float | None:
        if self.rate is None or self.rate <= 0 or self.total is None:
            return None
        return max(0.0, (self.total - self.done) / self.rate)


ProgressCallback = Callable[[Progress], None]


def no_progress(_progress: Progress) -> None:
    """A progress callback that ignores everything."""


NEVER_CANCELLED: CancelToken = threading.Event()


class Throttle:
    """Lets a call through at most every *interval* seconds (the first one always)."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._last = float("-inf")

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            return True
        return False


# -- stats and the run object ---------------------------------------------------------


def count_phrase(count: int, one: str, many: str | None = None) -> str:
    """``"1 error"``, ``"3 errors"``; *many* defaults to *one* for words like ``"new"``."""
    return f"{count} {one if count == 1 else (many if many is not None else one)}"


#: Field metadata key naming how :meth:`JobStats.counts` reports an ``int`` field: False
#: leaves it out (bookkeeping such as a batch size), a string reports it under that name.
COUNT = "count"


def not_counted(default: int = 0) -> Any:
    """An ``int`` field that :meth:`JobStats.counts` leaves out."""
    return field(default=default, metadata={COUNT: False})


def counted_as(key: str, default: int = 0) -> Any:
    """An ``int`` field that :meth:`JobStats.counts` reports under *key*."""
    return field(default=default, metadata={COUNT: key})


@dataclass(kw_only=True)
class JobStats:
    """What every job's result has in common; each job's stats class derives from it.

    Subclasses add their counters as ``int`` fields: :meth:`counts` reports every one of
    them in declaration order (the progress bar's counters and the job record's
    checkpoint), except those declared with :func:`not_counted`.  :meth:`summary` is the
    one line the CLI prints and the GUI shows in its status bar.
    """

    #: How the summary line names the job ("Scan", "Captioning", ...).
    TITLE: ClassVar[str] = "Job"
    #: How :meth:`summary` words a count: key -> (singular, plural).  Keys not listed
    #: are printed as they are ("3 skipped").
    LABELS: ClassVar[Mapping[str, tuple[str, str]]] = {"errors": ("error", "errors")}

    cancelled: bool = False
    #: Human-readable notes about what went wrong with single items (files, rows...).
    problems: list[str] = field(default_factory=list)
    #: The ``jobs`` record this run wrote (0 when it ran without one).
    job_id: int = not_counted()

    def counts(self) -> dict[str, int]:
        """The job's counters, in display order: its ``int`` fields, as declared."""
        return {key: getattr(self, name) for name, key in _counters(type(self))}

    def summary_counts(self) -> dict[str, int]:
        """The counters the summary line shows (by default :meth:`counts`)."""
        return self.counts()

    def summary(self) -> str:
        """One line, e.g. ``"Captioning finished: 12 captioned, 3 skipped, 1 error"``."""
        parts = [count_phrase(n, *self.LABELS.get(key, (key, key))) for key, n in self.summary_counts().items()]
        state = "cancelled" if self.cancelled else "finished"
        return f"{self.TITLE} {state}" + (": " + ", ".join(parts) if parts else "")


_COUNTERS: dict[type, list[tuple[str, str]]] = {}


def _counters(cls: type) -> list[tuple[str, str]]:
    """``(field name, reported key)`` of *cls*'s counters, worked out once per class."""
    if cls not in _COUNTERS:
        # Annotations are strings under ``from __future__ import annotations``; bool
        # (an int subclass) and ``int | None`` fields are not counters.
        _COUNTERS[cls] = [
            (f.name, f.metadata.get(COUNT) or f.name) for f in fields(cls)
            if f.type in (int, "int") and f.metadata.get(COUNT, True) is not False
        ]
    return _COUNTERS[cls]


#: How many problems the job record keeps in its message.
RECORDED_PROBLEMS = 20


class JobRecorder(Protocol):
    """What :class:`JobRun` needs of a library: update and finish its job record."""

    def update_job(self, job_id: int, **values: Any) -> None: ...

    def finish_job(self, job_id: int, state: Any, **values: Any) -> None: ...


S = TypeVar("S", bound=JobStats)


class JobRun(Generic[S]):
    """One running job: throttled progress, its stats and problems, and its record.

    Made by :meth:`core.library.Library.job` and used as a context manager.  On exit the
    job record is finished: *failed* (with the exception's message) when the block
    raised, else *cancelled* or *done* by ``stats.cancelled``, with the last progress
    (``done``/``total``), ``stats.counts()`` as checkpoint and the first
    :data:`RECORDED_PROBLEMS` problems as message — unless :meth:`finish` already did.
    """

    def __init__(
        self,
        recorder: JobRecorder,
        job_id: int,
        stats: S,
        progress: ProgressCallback = no_progress,
        *,
        interval: float = 0.1,
    ) -> None:
        self.recorder = recorder
        self.job_id = job_id
        self.stats = stats
        self._callback = progress
        self._throttle = Throttle(interval)
        self._started = time.monotonic()
        self._finished = False
        #: The last progress reported (throttled or not): what the record gets on exit.
        self.done = 0
        self.total: int | None = None

    @property
    def stats(self) -> S:
        """The job's stats (replaceable, e.g. by a result made elsewhere); they know the job id."""
        return self._stats

    @stats.setter
    def stats(self, stats: S) -> None:
        stats.job_id = self.job_id
        self._stats = stats

    @property
    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self._started

    def progress(
        self,
        done: int,
        total: int | None = None,
        message: str = "",
        *,
        force: bool = False,
        counts: Mapping[str, int] | None = None,
    ) -> None:
        """Report progress: at most every *interval* seconds unless *force* (first and
        last messages, once-per-batch reports).  *counts* defaults to ``stats.counts()``."""
        self.done, self.total = done, total
        if not (self._throttle.ready() or force):
            return
        elapsed = self.elapsed
        rate = done / elapsed if elapsed > 0 and done else None
        shown = dict(counts) if counts is not None else self.stats.counts()
        self._callback(Progress(done, total, message, shown, rate))

    def problem(self, text: str) -> None:
        """Note something that went wrong with one item (the job goes on)."""
        self.stats.problems.append(text)

    def save(self, **values: Any) -> None:
        """Write values (``done``, ``total``, ``checkpoint``...) to the job record now."""
        self.recorder.update_job(self.job_id, **values)

    def finish(self, **values: Any) -> None:
        """Finish the record now with exactly *values* (state from ``stats.cancelled``)."""
        self.recorder.finish_job(self.job_id, self._state(), **values)
        self._finished = True

    def _state(self) -> Any:
        from core.models import JobState  # keeps this module free of SQLAlchemy

        return JobState.CANCELLED if self.stats.cancelled else JobState.DONE

    def __enter__(self) -> JobRun[S]:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object) -> None:
        if exc is not None:
            from core.models import JobState

            # Also for KeyboardInterrupt/SystemExit: the record must not stay "running".
            self.recorder.finish_job(self.job_id, JobState.FAILED, message=f"{type(exc).__name__}: {exc}")
            return
        if self._finished:
            return
        values: dict[str, Any] = {"done": self.done, "checkpoint": self.stats.counts()}
        if self.total is not None:
            values["total"] = self.total
        values["message"] = "; ".join(self.stats.problems[:RECORDED_PROBLEMS]) or None
        self.finish(**values)
