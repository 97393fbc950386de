"""The dataset format registries: every writer and reader module is registered, and each
registered format is one that export and import accept."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.datasets import readers, writers
from core.datasets.errors import ExportError
from core.datasets.readers import IMPORT_FORMATS
from core.datasets.writers import EXPORT_FORMATS

#: Modules in each package that are shared helpers, not formats.
HELPERS = {"__init__", "base", "tables"}


def _format_modules(package: object) -> set[str]:
    folder = Path(package.__file__).parent  # type: ignore[attr-defined]
    return {path.stem for path in folder.glob("*.py")} - HELPERS


def test_every_writer_module_is_a_registered_export_format() -> None:
    assert _format_modules(writers) == set(writers.WRITERS) == set(EXPORT_FORMATS)
    for fmt, writer_class in writers.WRITERS.items():
        assert callable(writer_class.add) and callable(writer_class.close), fmt
        assert isinstance(writer_class.by_stem, bool), fmt


def test_every_reader_module_is_a_registered_import_format() -> None:
    assert _format_modules(readers) == set(readers.READERS) == set(IMPORT_FORMATS)


def test_unknown_formats_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="unknown export format 'tsv'; choose one of imagefolder, csv"):
        writers.make_writer("tsv", tmp_path, ".txt")
    assert not any(tmp_path.iterdir())

