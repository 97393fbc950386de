"""CaptionDesk desktop application: a thin PySide6 layer over :mod:`core`."""

# Before any Qt object exists: see desktop_app/_compat.py (a PySide6 6.12 bug on 3.11).
from desktop_app import _compat  # noqa: E402, F401
