"""``python -m desktop_app [--library PATH] [FOLDER]``."""

import sys

from desktop_app.app import main

sys.exit(main())
