"""The dataset jobs' refusals: what the user must change for an export or import to run."""


class ExportError(Exception):
    """The export cannot be done as asked (the message says what to change)."""


class CaptionImportError(Exception):
    """The source cannot be imported as asked (the message says why)."""
