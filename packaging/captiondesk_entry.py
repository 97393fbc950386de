"""Entry point of the frozen CaptionDesk application (PyInstaller runs this file).

It behaves exactly like the ``captiondesk`` console script (``captiondesk.cli:main``): no
arguments or only folders open the desktop window, subcommands run the CLI.  Until
``captiondesk.cli`` registers ``self-check`` itself, it is routed to :mod:`core.selfcheck` here.
"""

import multiprocessing
import sys


def _self_check_registered(cli) -> bool:
    import argparse

    for action in cli.build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return "self-check" in action.choices
    return False


def main() -> int:
    multiprocessing.freeze_support()
    from captiondesk import cli

    argv = sys.argv[1:]
    if "self-check" in argv and not _self_check_registered(cli):
        from core import selfcheck

        return selfcheck.main(argv[argv.index("self-check") + 1:])
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
