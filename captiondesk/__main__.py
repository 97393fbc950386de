"""``python -m captiondesk``: the same as the ``captiondesk`` console script."""

import sys

from captiondesk.launch import main

sys.exit(main())
