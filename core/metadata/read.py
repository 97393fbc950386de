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


@dataclass(frozen=True)
class PhotoInfo:
    """What the window's photo information panel shows: the camera's facts and the metadata's words.

    Each field is None when the photo does not say; ``problem`` says why metadata could not be
    read (the rest is still filled in as far as it could be).
    """

    file_size: int | None = None
    width: int | None = None
    height: int | None = None
    camera: str | None = None
    lens: str | None = None
    taken: str | None = None
    exposure: str | None = None
    description: str | None = None
    keywords: tuple[str, ...] = ()
    #: Every caption kind found in the metadata (kind name → text), the description included.
    kinds: dict[str, str] | None = None
    problem: str | None = None


#: EXIF tags (base IFD and Exif IFD) the information panel shows.
_MAKE, _MODEL, _DATETIME = 0x010F, 0x0110, 0x0132
_EXIF_IFD = 0x8769
_EXPOSURE_TIME, _F_NUMBER, _ISO, _TAKEN, _FOCAL_LENGTH, _LENS_MODEL = 0x829A, 0x829D, 0x8827, 0x9003, 0x920A, 0xA434


def _exif_text(value: Any) -> str | None:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value if isinstance(value, str) else None
    text = text.strip("\x00 \t\r\n") if text else None
    return text or None


def _camera_facts(path: Path) -> dict[str, Any]:
    """Camera, lens, date and exposure from EXIF through Pillow (which reads every format the library decodes)."""
    from PIL import Image as PILImage

    import core.imaging  # noqa: F401 - registers the HEIF opener

    with PILImage.open(path) as im:
        size = im.size
        exif = im.getexif()
        sub = exif.get_ifd(_EXIF_IFD)
    make, model = _exif_text(exif.get(_MAKE)), _exif_text(exif.get(_MODEL))
    camera = model if make and model and model.lower().startswith(make.split()[0].lower()) else \
        " ".join(p for p in (make, model) if p) or None
    exposure = []
    if sub.get(_EXPOSURE_TIME):
        seconds = float(sub[_EXPOSURE_TIME])
        exposure.append(f"1/{round(1 / seconds)} s" if 0 < seconds < 1 else f"{seconds:g} s")
    if sub.get(_F_NUMBER):
        exposure.append(f"f/{float(sub[_F_NUMBER]):g}")
    if sub.get(_ISO):
        exposure.append(f"ISO {sub[_ISO]}")
    if sub.get(_FOCAL_LENGTH):
        exposure.append(f"{float(sub[_FOCAL_LENGTH]):g} mm")
    return {
        "width": size[0], "height": size[1], "camera": camera, "lens": _exif_text(sub.get(_LENS_MODEL)),
        "taken": _exif_text(sub.get(_TAKEN)) or _exif_text(exif.get(_DATETIME)),
        "exposure": " · ".join(exposure) or None,
    }


def read_photo_info(path: Path | str) -> PhotoInfo:
    """What *path* says about itself: size, camera, date, exposure, its description and keywords.

    Never raises for a bad photo: what could not be read is named in ``problem``.
    """
    path = Path(path)
    facts: dict[str, Any] = {}
    problems: list[str] = []
    try:
        facts["file_size"] = path.stat().st_size
    except OSError as exc:
        return PhotoInfo(problem=f"cannot read {path}: {exc.strerror or exc}")
    try:
        facts.update(_camera_facts(path))
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for a bad file
        problems.append(f"no camera data ({type(exc).__name__}: {exc})")
    kinds: dict[str, str] = {}
    try:
        for kind, found in read_kinds(path).items():
            if isinstance(found.value, tuple):
                facts["keywords"] = found.value
            else:
                kinds[kind] = found.value
    except MetadataError as exc:
        problems.append(str(exc))
    return PhotoInfo(**facts, description=kinds.get(CAPTION), kinds=kinds or None,
                     problem="; ".join(problems) or None)
