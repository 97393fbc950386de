"""Where the ``captiondesk`` command starts (the console script and ``python -m captiondesk``).

Importing the CLI takes a moment (argparse, SQLAlchemy, the core library); a Ctrl-C in that
moment would otherwise end in a ``KeyboardInterrupt`` traceback from the import machinery.
This module imports nothing of the project at its top, so that moment is covered from the
start: one "Interrupted." line and exit status 130, as everywhere else in the CLI.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    try:
        from captiondesk.cli import main as cli_main
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130  # common.EXIT_INTERRUPTED (not imported: it is what was interrupted)
    return cli_main(argv)
