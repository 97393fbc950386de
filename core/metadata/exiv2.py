"""pyexiv2 (libexiv2, GPLv3), imported on first use so the rest of CaptionDesk works without it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.metadata.errors import MetadataUnavailable
from core.metadata.fields import utf8_encodable

if TYPE_CHECKING:
    pass


_pyexiv2_module: Any = None


def load_pyexiv2() -> Any:
    global _pyexiv2_module
    if _pyexiv2_module is None:
        try:
            import pyexiv2
        except ImportError:
            raise MetadataUnavailable(
                "reading and writing photo metadata needs pyexiv2: pip install pyexiv2"
            ) from None
        # exiv2's warnings about odd makernotes go to stderr otherwise; errors still raise.
        pyexiv2.set_log_level(3)
        _pyexiv2_module = pyexiv2
    return _pyexiv2_module


def open_image_file(path: Path) -> Any:
    pyexiv2 = load_pyexiv2()
    # pyexiv2 cannot open non-ASCII paths on Windows, nor (anywhere) a name that is not
    # valid UTF-8 (surrogate-escaped bytes): read the bytes ourselves then.
    if sys.platform == "win32" or not str(path).isascii() and not utf8_encodable(str(path)):
        return pyexiv2.ImageData(path.read_bytes())
    return pyexiv2.Image(str(path))


def open_packet(packet: bytes) -> Any:
    """An XMP packet (a sidecar's bytes) opened as exiv2 opens an image."""
    return load_pyexiv2().ImageData(packet)
