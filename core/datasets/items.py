"""One image on its way into a dataset: its checked (or converted) bytes, name, split and caption."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from core.datasets.naming import CONVERT_TO_JPEG, export_caption_line
from core.datasets.selection import CaptionedImage
from core.imaging import load_rgb

CONVERTED_JPEG_QUALITY = 95
#: Box the readability check decodes into (JPEGs decode at 1/8 scale: cheap).
READABLE_CHECK_SIZE = 64


@dataclass(frozen=True)
class PreparedImage:
    """The bytes to put in the dataset: the original file, or its JPEG conversion."""

    data: bytes
    converted: bool
    width: int | None
    height: int | None


def icc_profile(path: Path) -> bytes | None:
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as im:
            return im.info.get("icc_profile")
    except Exception:  # noqa: BLE001 - colour profile is a nicety; the pixels decoded already
        return None


def prepare_image(path: Path, width: int | None, height: int | None) -> PreparedImage:
    """Check that *path* decodes and return what to write.  Raises ImageDecodeError/OSError."""
    if path.suffix.lower() in CONVERT_TO_JPEG:
        rgb = load_rgb(path)  # orientation applied: the JPEG carries no EXIF to rotate it
        buffer = io.BytesIO()
        icc = icc_profile(path)
        options: dict[str, Any] = {"quality": CONVERTED_JPEG_QUALITY}
        if icc:
            options["icc_profile"] = icc  # e.g. Display P3 from an iPhone: keep colours right
        rgb.save(buffer, "JPEG", **options)
        return PreparedImage(buffer.getvalue(), True, rgb.width, rgb.height)
    # A cheap decode proves the file is readable (truncated or corrupt files raise).
    load_rgb(path, max_size=READABLE_CHECK_SIZE)
    return PreparedImage(path.read_bytes(), False, width, height)




@dataclass(frozen=True)
class ExportItem:
    image: CaptionedImage
    split: str
    #: Path relative to the split folder.
    name: str
    text: str
    prepared: PreparedImage
    #: Further caption variants, written one per line after *text* (sidecar ``--variants``).
    variants: tuple[str, ...] = ()
    #: The other kinds' values by column (core.datasets.kind_values), None where it has none.
    kinds: dict[str, str | None] = field(default_factory=dict)


def image_data(item: ExportItem) -> bytes:
    """The bytes to write as *item.name*: the prepared ones, or the photo converted to the
    format the export named it in (``scan.tif.png``, ``anim.gif.jpg``)."""
    target = PurePosixPath(item.name).suffix.lower()
    if item.prepared.converted or target == item.image.path.suffix.lower():
        return item.prepared.data
    rgb = load_rgb(item.image.path)  # 16-bit scaled, upright
    buffer = io.BytesIO()
    if target == ".jpg":
        icc = icc_profile(item.image.path)
        rgb.save(buffer, "JPEG", quality=CONVERTED_JPEG_QUALITY, **({"icc_profile": icc} if icc else {}))
    else:
        rgb.save(buffer, "PNG")  # lossless
    return buffer.getvalue()


def caption_file_text(item: ExportItem) -> str:
    """One caption per line: the caption, then its variants (trainers read the first line,
    or one line per step as OneTrainer does)."""
    return "\n".join(export_caption_line(text) for text in (item.text, *item.variants))
