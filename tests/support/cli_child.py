"""Run ``captiondesk`` in a child process, optionally slowed down for interruption tests.

``python -m tests.support.cli_child ARGS...`` is ``captiondesk ARGS...``, except that with
``$CAPTIONDESK_TEST_PROGRESS_DELAY`` set (seconds) every progress report the CLI receives
waits that long on the job's thread — so a job on a handful of tiny images lasts long
enough for a test to send SIGINT mid-way — and with ``$CAPTIONDESK_TEST_BUSY_TIMEOUT_MS``
a locked library fails after that long instead of 30 s.  These knobs live here, in the
test harness; the product code never sleeps.
"""

from __future__ import annotations

import os
import sys
import time

from captiondesk import common

_DELAY = float(os.environ.get("CAPTIONDESK_TEST_PROGRESS_DELAY", "0") or 0)

if _DELAY > 0:
    _report = common.ProgressBar.__call__

    def _slow_report(self: common.ProgressBar, progress: object) -> None:
        _report(self, progress)  # type: ignore[arg-type]
        time.sleep(_DELAY)  # on the job's thread: the job itself slows down

    common.ProgressBar.__call__ = _slow_report  # type: ignore[method-assign]

if os.environ.get("CAPTIONDESK_TEST_BUSY_TIMEOUT_MS"):
    from core import db

    db.BUSY_TIMEOUT_MS = int(os.environ["CAPTIONDESK_TEST_BUSY_TIMEOUT_MS"])

if __name__ == "__main__":
    from captiondesk.cli import main

    sys.exit(main(sys.argv[1:]))
