"""CaptionDesk desktop application: a thin PySide6 layer over :mod:`core`."""
