"""The contract every long-running core job follows.

A job is a plain function that takes a ``progress`` callback and a ``cancel`` token:

* ``cancel`` is anything with ``is_set() -> bool`` (a :class:`threading.Event` works).
  Jobs check it between batches and stop promptly, keeping what they already committed.
* ``progress`` receives :class:`Progress` snapshots.  Jobs call it at most once per
  batch (and throttle it), so a GUI can forward it as a signal without a storm.

Jobs write their results in batches through their own short database sessions, and
record themselves in the ``jobs`` table so an interrupted job can be resumed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


class CancelToken(Protocol):
    def is_set(self) -> bool: ...


class JobCancelled(Exception):
    """Raised inside a job when its cancel token is set (caught by the job itself)."""


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
