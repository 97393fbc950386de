"""Reading a photo's caption (XMP sidecar, XMP, IPTC, EXIF) and keywords, for import and prompts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.metadata.errors import MetadataError, MetadataUnavailable
from core.metadata.exiv2 import open_image_file
from core.metadata.fields import (
    CAMERA_DEFAULT_DESCRIPTIONS,
    EXIF_DESCRIPTION,
    IN_FILE_SUFFIXES,
    IPTC_CAPTION,
    XMP_DESCRIPTION,
    clean_text,
    lang_alt_text,
    read_iptc,
    xmp_text_from_packet,
)
from core.metadata.sidecars import existing_sidecar, read_sidecar

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class FoundCaption:
    """A caption found in metadata: the text, the field (xmp/iptc/exif) and the file."""

    text: str
    field: str
    location: Path


def read_with_pillow(path: Path) -> tuple[str | None, str | None]:
    """XMP and EXIF descriptions through Pillow (pillow-heif reads HEIC/AVIF items)."""
    from PIL import Image as PILImage

    import core.imaging  # noqa: F401 - registers the HEIF opener

    with PILImage.open(path) as im:
        packet = im.info.get("xmp")
        xmp_text = xmp_text_from_packet(packet) if packet else None
        exif_text = im.getexif().get(0x010E)
    return xmp_text, exif_text if isinstance(exif_text, str) else None


def read_caption(path: Path | str, *, within: Path | None = None) -> FoundCaption | None:
    """The caption stored in *path*'s metadata, or None.

    Looked for in this order: an XMP sidecar (written by CaptionDesk's sidecar mode,
    Lightroom, darktable...), then XMP dc:description, IPTC Caption-Abstract and EXIF
    ImageDescription in the file.  Camera boilerplate ("OLYMPUS DIGITAL CAMERA") is not a
    caption.  Raises :class:`MetadataError` when the file's metadata cannot be read, and
    for a sidecar that is a link leading outside *within* (an import's source) or too big.
    """
    path = Path(path)
    sidecar = existing_sidecar(path)
    if sidecar is not None:
        packet = read_sidecar(sidecar, within)
        try:
            text = clean_text(xmp_text_from_packet(packet, strict=True))
        except ValueError as exc:
            # The sidecar outranks the photo's own fields: a damaged one is reported, not bypassed.
            raise MetadataError(f"cannot parse the XMP sidecar {sidecar} ({exc}); this photo's caption "
                                "is not imported until the sidecar is fixed or removed") from None
        if text:
            return FoundCaption(text, "xmp", sidecar)
    try:
        with open_image_file(path) as image:
            xmp_text = clean_text(lang_alt_text(image.read_xmp().get(XMP_DESCRIPTION)))
            iptc, _utf8 = read_iptc(image)
            iptc_text = clean_text(iptc.get(IPTC_CAPTION))
            exif_text = clean_text(image.read_exif().get(EXIF_DESCRIPTION))
    except MetadataUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - exiv2 raises RuntimeError and friends
        raise MetadataError(f"cannot read metadata of {path}: {exc}") from None
    if not xmp_text and not exif_text and path.suffix.lower() not in IN_FILE_SUFFIXES:
        # exiv2 misses XMP that exiftool stores in HEIC/AVIF; Pillow finds the item.
        try:
            xmp_text, exif_text = (clean_text(t) for t in read_with_pillow(path))
        except Exception:  # noqa: BLE001, S110 - a second opinion only; exiv2 already answered
            pass
    if xmp_text:
        return FoundCaption(xmp_text, "xmp", path)
    if iptc_text:
        return FoundCaption(iptc_text, "iptc", path)
    if exif_text and exif_text.casefold() not in CAMERA_DEFAULT_DESCRIPTIONS:
        return FoundCaption(exif_text, "exif", path)
    return None


def read_keywords(path: Path | str) -> list[str]:
    """Keywords in *path*'s metadata (XMP dc:subject, else IPTC Keywords); [] when there are none.

    Raises :class:`MetadataError` when the file's metadata cannot be read.
    """
    path = Path(path)
    try:
        with open_image_file(path) as image:
            subject = image.read_xmp().get("Xmp.dc.subject")
            iptc, _utf8 = read_iptc(image)
    except MetadataUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - exiv2 raises RuntimeError and friends
        raise MetadataError(f"cannot read metadata of {path}: {exc}") from None
    for value in (subject, iptc.get("Iptc.Application2.Keywords")):
        words = [value] if isinstance(value, str) else list(value or [])
        words = [w.strip() for w in words if isinstance(w, str) and w.strip()]
        if words:
            return words
    return []
