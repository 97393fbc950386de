"""The export formats, one writer module each, and the registry that finds them.

Each module here defines one writer class (``add`` one image with its caption, ``close``
to finish the files; see :class:`~.base.Writer`) named ``WRITER`` and built as
``WRITER(root, caption_extension)`` (plus ``kind_columns`` / ``template`` for a writer that
declares ``per_kind_columns`` / ``records_template``).  Adding a format means adding its file, its tests
and its module name to :data:`_WRITER_MODULES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core.datasets.errors import ExportError
from core.datasets.writers.base import Writer

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["EXPORT_FORMATS", "WRITERS", "Writer", "make_writer"]

#: Modules in this package that define a ``WRITER``, in the order the formats are offered.
_WRITER_MODULES = ("imagefolder", "csv", "coco", "sidecar", "parquet", "kohya")

#: Format name -> writer class.
WRITERS: dict[str, type] = {name: importlib.import_module(f"{__name__}.{name}").WRITER for name in _WRITER_MODULES}

EXPORT_FORMATS = tuple(WRITERS)


def make_writer(fmt: str, root: Path, caption_extension: str, *, kind_columns: Sequence[str] = (),
                template: str | None = None) -> Writer:
    """The writer of format *fmt* writing under *root*; ExportError for an unknown format.

    *kind_columns* go to a writer with ``per_kind_columns`` (one column per caption kind),
    *template* to one with ``records_template`` (it notes how its captions were made)."""
    writer_class = WRITERS.get(fmt)
    if writer_class is None:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    options: dict[str, Any] = {}
    if getattr(writer_class, "per_kind_columns", False):
        options["kind_columns"] = tuple(kind_columns)
    if getattr(writer_class, "records_template", False):
        options["template"] = template
    return writer_class(root, caption_extension, **options)
