"""The import's public names where callers have always imported them; the code is in :mod:`core.datasets`."""

from core.datasets.errors import CaptionImportError
from core.datasets.import_job import import_captions
from core.datasets.import_stats import ImportStats
from core.datasets.readers import IMPORT_FORMATS
from core.datasets.readers.base import MAX_CAPTION_CHARS

__all__ = ["IMPORT_FORMATS", "MAX_CAPTION_CHARS", "CaptionImportError", "ImportStats", "import_captions"]
