"""The ``captiondesk`` command: a thin command-line layer over :mod:`core`.

``core`` is the plain library (no Qt, no argument parsing); this package parses
arguments, prints progress and summaries, and dispatches to the desktop app
(:mod:`desktop_app`) when no sub-command is given.
"""
