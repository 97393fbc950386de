"""``python -m captiondesk``: the same as the ``captiondesk`` console script."""

import sys

try:
    from captiondesk.cli import main
except KeyboardInterrupt:  # Ctrl-C while the CLI itself is being imported: no traceback
    print("\nInterrupted.", file=sys.stderr)
    sys.exit(130)  # common.EXIT_INTERRUPTED (not imported: it is what was interrupted)

sys.exit(main())
