"""Entry point of the frozen CaptionDesk application (PyInstaller runs this file).

It behaves exactly like the ``captiondesk`` console script (``captiondesk.launch:main``): no
arguments or only folders open the desktop window, subcommands (``self-check`` included)
run the CLI.
"""

import multiprocessing
import sys


def main() -> int:
    multiprocessing.freeze_support()
    from captiondesk.launch import main as launch

    return launch(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
