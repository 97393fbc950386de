"""``captiondesk self-check``: is this installation (source tree or frozen bundle) complete?

Runs :func:`core.selfcheck.run_checks` and, when PySide6 imports, the desktop app's Qt
checks (:mod:`desktop_app.selfcheck_gui`): the command line composes the two, so that
``core`` imports nothing of the desktop app.  Exits 0 when everything essential works,
1 otherwise (each problem says what broke).

``self-check --smoke-test`` (hidden) additionally opens the real main window on a
temporary library, waits until the library is open, and closes it again: the packaging
smoke test runs it against the frozen app with ``QT_QPA_PLATFORM=offscreen``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from captiondesk.common import EXIT_FAILED, EXIT_OK


def _all_checks(smoke_test: bool, library_path: Any = None) -> list[Any]:
    from core import selfcheck

    checks = selfcheck.run_checks(library_path)
    if any(c.name == "PySide6" and c.ok for c in checks):
        from desktop_app.selfcheck_gui import check_qt_plugins

        checks.append(check_qt_plugins())
    if smoke_test:
        if not selfcheck.essential_failures(checks):
            from desktop_app.selfcheck_gui import smoke_test_gui

            checks.append(smoke_test_gui(min_ms=int(os.environ.get("CAPTIONDESK_SMOKE_EXIT_MS", "1500"))))
        else:
            checks.append(selfcheck.Check("GUI", False, "not started: essential checks failed"))
    return checks


def cmd_self_check(args: argparse.Namespace) -> int:
    from core import selfcheck

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a self-check never touches the network
    checks = _all_checks(getattr(args, "smoke_test", False), getattr(args, "library", None))
    print("CaptionDesk self-check")
    for line in selfcheck.format_checks(checks):
        print(line)
    failed = selfcheck.essential_failures(checks)
    if failed:
        print(
            f"self-check FAILED: {', '.join(c.name for c in failed)} "
            f"({'reinstall CaptionDesk' if selfcheck.frozen() else 'reinstall the dependencies: pip install -e .'})",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print("self-check passed")
    return EXIT_OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--smoke-test", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(handler=cmd_self_check)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``self-check`` subcommand to ``captiondesk``'s subparsers."""
    parser = subparsers.add_parser(
        "self-check",
        help="check that this installation is complete (versions, device, model cache, library)",
        description="Check that this installation works: library versions, compute device, "
        "default model cache, migrations, a temporary library and Qt's plugins. No network access.",
    )
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``captiondesk self-check [--smoke-test]`` on its own."""
    parser = argparse.ArgumentParser(prog="captiondesk self-check")
    add_arguments(parser)
    args = parser.parse_args(list(argv) if argv is not None else None)
    return args.handler(args)
