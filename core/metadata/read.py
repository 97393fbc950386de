"""Reading a photo's caption kinds (XMP sidecar, XMP, IPTC, EXIF) and keywords, for import and prompts."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.metadata.errors import MetadataError, MetadataUnavailable
from core.metadata.exiv2 import open_image_file, open_packet
from core.metadata.fields import (
    CAMERA_DEFAULT_DESCRIPTIONS,
    EXIF_DESCRIPTION,
    IN_FILE_SUFFIXES,
    XMP_DESCRIPTION,
    clean_text,
    lang_alt_text,
    read_iptc,
    xmp_text_from_packet,
)
from core.metadata.keywords import KEYWORD_XMP_KEYS, keywords_from_fields
from core.metadata.kind_fields import CAPTION, KEYWORDS, METADATA_KINDS, TEXT_KINDS
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


@dataclass(frozen=True)
class FoundValue:
    """A kind's value found in metadata: text (keywords: a tuple, ``|`` hierarchy), the
    field it came from (xmp/iptc/exif) and the file."""

    value: str | tuple[str, ...]
    field: str
    location: Path


def read_caption(path: Path | str, *, within: Path | None = None) -> FoundCaption | None:
    """The caption stored in *path*'s metadata, or None (see :func:`read_kinds`)."""
    found = read_kinds(path, within=within, kinds=(CAPTION,)).get(CAPTION)
    if found is None:
        return None
    assert isinstance(found.value, str)
    return FoundCaption(found.value, found.field, found.location)


def read_kinds(
    path: Path | str, *, within: Path | None = None, kinds: Collection[str] = METADATA_KINDS
) -> dict[str, FoundValue]:
    """The value of each of *kinds* stored in *path*'s metadata (kinds without one are left out).

    Each kind is looked for in this order: an XMP sidecar (written by CaptionDesk's sidecar
    mode, Lightroom, darktable...), then XMP, IPTC and EXIF in the file
    (:mod:`.kind_fields` says which fields; keywords: :mod:`.keywords`).  Camera
    boilerplate ("OLYMPUS DIGITAL CAMERA") is not a caption.  Raises :class:`MetadataError`
    when the file's metadata cannot be read, and for a sidecar that is a link leading
    outside *within* (an import's source), too big or not XMP.
    """
    path = Path(path)
    found: dict[str, FoundValue] = {}
    sidecar = existing_sidecar(path)
    if sidecar is not None:
        packet = read_sidecar(sidecar, within)
        try:
            text = clean_text(xmp_text_from_packet(packet, strict=True))
        except ValueError as exc:
            # The sidecar outranks the photo's own fields: a damaged one is reported, not bypassed.
            raise MetadataError(f"cannot parse the XMP sidecar {sidecar} ({exc}); this photo's metadata "
                                "is not imported until the sidecar is fixed or removed") from None
        if text and CAPTION in kinds:
            found[CAPTION] = FoundValue(text, "xmp", sidecar)
        if set(kinds) - {CAPTION}:
            _collect(found, kinds, _packet_xmp(packet, sidecar), {}, {}, sidecar)
    if all(kind in found for kind in kinds):
        return found
    try:
        with open_image_file(path) as image:
            xmp = image.read_xmp()
            iptc, _utf8 = read_iptc(image)
            exif = image.read_exif()
    except MetadataUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - exiv2 raises RuntimeError and friends
        if found:
            return found  # what the sidecar holds is not lost to a photo exiv2 cannot read (GIF, BMP)
        raise MetadataError(f"cannot read metadata of {path}: {exc}") from None
    if (CAPTION in kinds and not xmp.get(XMP_DESCRIPTION) and not exif.get(EXIF_DESCRIPTION)
            and path.suffix.lower() not in IN_FILE_SUFFIXES):
        # exiv2 misses XMP that exiftool stores in HEIC/AVIF; Pillow finds the item.
        try:
            xmp_text, exif_text = read_with_pillow(path)
            xmp = {**xmp, XMP_DESCRIPTION: xmp_text}
            exif = {**exif, EXIF_DESCRIPTION: exif_text}
        except Exception:  # noqa: BLE001, S110 - a second opinion only; exiv2 already answered
            pass
    _collect(found, kinds, xmp, iptc, exif, path)
    return found


def _packet_xmp(packet: bytes, sidecar: Path) -> dict[str, Any]:
    try:
        with open_packet(packet) as image:
            return image.read_xmp()
    except MetadataUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - exiv2 raises RuntimeError and friends
        raise MetadataError(f"cannot read the XMP sidecar {sidecar}: {exc}") from None


def _collect(found: dict[str, FoundValue], kinds: Collection[str], xmp: dict[str, Any], iptc: dict[str, Any],
             exif: dict[str, Any], location: Path) -> None:
    """Add to *found* each of *kinds* it lacks that these fields hold."""
    for kind in kinds:
        if kind in found:
            continue
        if kind == KEYWORDS:
            words = keywords_from_fields(xmp, iptc)
            if words:
                field = "xmp" if any(xmp.get(key) for key in KEYWORD_XMP_KEYS) else "iptc"
                found[kind] = FoundValue(tuple(words), field, location)
            continue
        fields = TEXT_KINDS[kind]
        for field, value in (("xmp", lang_alt_text(xmp.get(fields.xmp))),
                             ("iptc", iptc.get(fields.iptc) if fields.iptc else None),
                             ("exif", exif.get(fields.exif) if fields.exif else None)):
            text = clean_text(value) if isinstance(value, str) else None
            if text and not (field == "exif" and text.casefold() in CAMERA_DEFAULT_DESCRIPTIONS):
                found[kind] = FoundValue(text, field, location)
                break


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
