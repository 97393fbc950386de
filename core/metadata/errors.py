"""What goes wrong with photo metadata: one clear message per file."""

from __future__ import annotations

from core.errors import UserFacingError


class MetadataError(UserFacingError):
    """A metadata read or write that failed for one file (the message says why).

    The message is made one line: exiv2's texts end in a newline (blank lines on
    stderr, ``\\n`` in ``--json``).
    """

    def __init__(self, message: object = "") -> None:
        super().__init__("; ".join(line.strip() for line in str(message).splitlines() if line.strip()))


class MetadataUnavailable(MetadataError):
    """pyexiv2 is not installed."""
