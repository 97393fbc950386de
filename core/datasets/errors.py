"""The dataset jobs' refusals: what the user must change for an export or import to run."""

from core.errors import UserFacingError


class ExportError(UserFacingError):
    """The export cannot be done as asked (the message says what to change)."""


class CaptionImportError(UserFacingError):
    """The source cannot be imported as asked (the message says why)."""
