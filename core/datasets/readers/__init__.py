"""The import formats, one reader module each, and the registry that finds them.

Each module here defines one reader, ``READER(src, stats)``, yielding a
:class:`~.base.CaptionGroup` per image the source names and reporting unusable rows and
files in ``stats.problems``; it raises :class:`~core.datasets.errors.CaptionImportError`
when *src* is not a source of its format.  Adding a format means adding its file, its
tests and its module name to :data:`_READER_MODULES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from core.datasets.import_stats import ImportStats
    from core.datasets.readers.base import CaptionGroup

__all__ = ["IMPORT_FORMATS", "READERS", "Reader"]

Reader = Callable[["Path", "ImportStats"], Iterator["CaptionGroup"]]

#: Modules in this package that define a ``READER``, in the order the formats are offered.
_READER_MODULES = ("sidecar", "flickr8k", "coco", "imagefolder", "csv", "parquet", "metadata")

#: Format name -> reader.
READERS: dict[str, Reader] = {name: importlib.import_module(f"{__name__}.{name}").READER for name in _READER_MODULES}

IMPORT_FORMATS = tuple(READERS)
