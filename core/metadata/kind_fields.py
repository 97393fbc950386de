"""Which metadata fields each caption kind is written to and read back from: the registry.

One table, one row per kind, rather than a module per kind: the four text kinds differ
only in their field names and limits (an XMP language alternative, an optional IPTC IIM
dataset with its byte limit, an optional ASCII EXIF tag), so one set of functions serves
them all; keywords, the one structured kind, have their own module, :mod:`.keywords`.
A new kind with a standard field is a new row here.  Kinds without one (the library's
own, user-defined kinds) stay in the library: no tool would read them.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.metadata.fields import (
    EXIF_DESCRIPTION,
    IPTC_CAPTION,
    IPTC_CAPTION_MAX_BYTES,
    XMP_DESCRIPTION,
)


@dataclass(frozen=True)
class TextKindFields:
    """Where a text kind goes: an XMP language alternative (``x-default``), and where the
    format has them an IPTC IIM dataset (cut at *iptc_max_bytes*) and an ASCII-only EXIF tag."""

    kind: str
    xmp: str
    iptc: str | None = None
    iptc_max_bytes: int = 0
    exif: str | None = None
    #: The fields as exiftool names them, for people (the dialog, README's table).
    field_names: tuple[str, ...] = ()
    #: Whether the text describes the picture, and so can disagree with a new description.
    describes_image: bool = False


CAPTION = "caption"
ALT_TEXT = "alt_text"
EXTENDED_DESCRIPTION = "extended_description"
TITLE = "title"
KEYWORDS = "keywords"

TEXT_KINDS: dict[str, TextKindFields] = {
    fields.kind: fields
    for fields in (
        TextKindFields(
            CAPTION, XMP_DESCRIPTION, IPTC_CAPTION, IPTC_CAPTION_MAX_BYTES, EXIF_DESCRIPTION,
            ("XMP-dc:Description", "IPTC:Caption-Abstract", "EXIF:ImageDescription (ASCII only)"),
        ),
        TextKindFields(
            ALT_TEXT, "Xmp.iptc.AltTextAccessibility",
            field_names=("XMP-iptcCore:AltTextAccessibility",), describes_image=True,
        ),
        TextKindFields(
            EXTENDED_DESCRIPTION, "Xmp.iptc.ExtDescrAccessibility",
            field_names=("XMP-iptcCore:ExtDescrAccessibility",), describes_image=True,
        ),
        # IPTC Core maps its Title to IIM Object Name (2:05), 64 bytes at most.
        TextKindFields(TITLE, "Xmp.dc.title", "Iptc.Application2.ObjectName", 64,
                       field_names=("XMP-dc:Title", "IPTC:ObjectName")),
    )
}

KEYWORD_FIELD_NAMES = (
    "XMP-dc:Subject", "XMP-lr:HierarchicalSubject (a|b)", "XMP-digiKam:TagsList (a/b)", "IPTC:Keywords",
)

#: The kinds that have metadata fields, in the order they are written and listed.
METADATA_KINDS: tuple[str, ...] = (*TEXT_KINDS, KEYWORDS)


def kind_field_names(kind: str) -> tuple[str, ...]:
    """The fields *kind* is written to, as exiftool names them; () for a kind without any."""
    if kind == KEYWORDS:
        return KEYWORD_FIELD_NAMES
    fields = TEXT_KINDS.get(kind)
    return fields.field_names if fields is not None else ()


def iptc_text(text: str, max_bytes: int) -> str:
    """*text* cut to *max_bytes* of UTF-8, at a character boundary (IPTC IIM's limits are in bytes)."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", "ignore")
