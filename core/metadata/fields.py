"""Where a caption goes in a photo's metadata and how it is read back: the XMP, IPTC and EXIF field mapping.

* XMP ``dc:description`` (``x-default``; other languages already there are kept);
* IPTC IIM ``Caption-Abstract``, with the UTF-8 character-set marker
  (``Iptc.Envelope.CharacterSet = ESC % G``) — without it readers decode non-ASCII text as
  Latin-1 and show mojibake;
* EXIF ``ImageDescription`` only when the caption is ASCII (the EXIF type is ASCII).

Which kind goes to which fields is :mod:`core.metadata.kind_fields`; these are the primitives.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree

if TYPE_CHECKING:
    pass


#: Formats whose files carry the caption themselves (exiv2 writes these).
IN_FILE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".tif", ".tiff", ".webp"})
#: Of those, the ones with an IPTC block (WebP has none).
IPTC_SUFFIXES = IN_FILE_SUFFIXES - {".webp"}
#: Characters XML 1.0 cannot hold: exiv2 stores them in XMP as spaces, so the caption is
#: written with spaces in every field (else each run would see a difference and rewrite).
NOT_XML_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
XMP_DESCRIPTION = "Xmp.dc.description"
X_DEFAULT = 'lang="x-default"'
IPTC_CAPTION = "Iptc.Application2.Caption"
IPTC_CHARSET = "Iptc.Envelope.CharacterSet"
#: ISO 2022 escape sequence that declares UTF-8 in IPTC IIM.
IPTC_UTF8 = "\x1b%G"
#: IPTC IIM's maximum length of Caption-Abstract, in bytes.
IPTC_CAPTION_MAX_BYTES = 2000
EXIF_DESCRIPTION = "Exif.Image.ImageDescription"
#: What cameras put in ImageDescription by themselves: not a caption.
CAMERA_DEFAULT_DESCRIPTIONS = frozenset(
    text.casefold()
    for text in (
        "OLYMPUS DIGITAL CAMERA", "SONY DSC", "DIGITAL CAMERA", "KONICA MINOLTA DIGITAL CAMERA",
        "MINOLTA DIGITAL CAMERA", "SAMSUNG DIGITAL CAMERA", "SAMSUNG", "DCIM", "Default",
        "default", "Image", "Picture", "Photo", "LEICA", "PENTAX", "Exif_JPEG_PICTURE",
        "Created with GIMP", "Untitled",
    )
)
EMPTY_XMP_PACKET = (
    b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
    b' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/>\n'
    b"</x:xmpmeta>\n"
    b'<?xpacket end="w"?>'
)


def lang_alt_text(value: Any) -> str | None:
    """The x-default entry of an XMP language alternative, else its first entry."""
    if isinstance(value, dict):
        text = value.get(X_DEFAULT)
        if text is None and value:
            text = next(iter(value.values()))
        return text
    if isinstance(value, str):
        return value
    return None


def clean_text(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.replace("\x00", "").strip()
    return text or None


def read_iptc(image: Any) -> tuple[dict[str, Any], bool]:
    """IPTC datasets and whether they were stored in UTF-8.

    Files without the UTF-8 marker are often Latin-1 (the IIM default in practice);
    UTF-8 text without the marker also decodes, and is taken as UTF-8.
    """
    try:
        iptc = image.read_iptc(encoding="utf-8")
    except UnicodeDecodeError:
        return image.read_iptc(encoding="iso-8859-1"), False
    charset = iptc.get(IPTC_CHARSET)
    if charset not in (None, IPTC_UTF8):
        return image.read_iptc(encoding="iso-8859-1"), False
    return iptc, True


def utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def xmp_text_from_packet(packet: bytes | str, *, strict: bool = False) -> str | None:
    """dc:description from a raw XMP packet (for what exiv2 cannot read in HEIC/AVIF).

    With *strict*, a packet that is not XMP raises ``ValueError`` saying why (a sidecar
    is nothing else), instead of counting as "no description".
    """
    if isinstance(packet, str):
        packet = packet.encode("utf-8")
    start = packet.find(b"<x:xmpmeta")
    end = packet.rfind(b"</x:xmpmeta>")
    if start < 0 or end < 0:
        if strict and packet.strip():
            raise ValueError("no <x:xmpmeta> element")
        return None
    try:
        root = ElementTree.fromstring(packet[start : end + len(b"</x:xmpmeta>")])
    except ElementTree.ParseError as exc:
        if strict:
            raise ValueError(f"not well-formed XML ({exc})") from None
        return None
    rdf = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
    lang = "{http://www.w3.org/XML/1998/namespace}lang"
    for description in root.iter("{http://purl.org/dc/elements/1.1/}description"):
        items = list(description.iter(f"{rdf}li"))
        for item in items:
            if item.get(lang) == "x-default":
                return item.text
        if items:
            return items[0].text
    return None


def metadata_text(text: str) -> str:
    """*text* as the metadata will hold it: control characters XML cannot carry become
    spaces (what exiv2 would store anyway), ends stripped."""
    return NOT_XML_CHARACTERS.sub(" ", text).strip()


def lang_alt_changes(xmp: dict[str, Any], key: str, text: str) -> dict[str, Any]:
    """The change that makes *key*'s ``x-default`` entry *text* ({} when it is already)."""
    current = xmp.get(key)
    alternatives = dict(current) if isinstance(current, dict) else {}
    if alternatives.get(X_DEFAULT) == text:
        return {}
    alternatives[X_DEFAULT] = text  # other languages stay as they were
    return {key: alternatives}


def iptc_caption_text(text: str) -> str:
    """*text* cut to what IPTC Caption-Abstract may hold, at a UTF-8 character boundary."""
    data = text.encode("utf-8")
    if len(data) <= IPTC_CAPTION_MAX_BYTES:
        return text
    return data[:IPTC_CAPTION_MAX_BYTES].decode("utf-8", "ignore")


def _iptc_same(current: Any, target: str | list[str]) -> bool:
    if isinstance(target, list):
        values = [current] if isinstance(current, str) else list(current or [])
        return values == target
    return current == target


def iptc_changes(iptc: dict[str, Any], stored_as_utf8: bool, targets: dict[str, str | list[str]]) -> dict[str, Any]:
    """The IPTC datasets to write so that each of *targets* holds its value, in UTF-8."""
    changes: dict[str, Any] = {key: value for key, value in targets.items() if not _iptc_same(iptc.get(key), value)}
    texts = [v for value in targets.values() for v in (value if isinstance(value, list) else [value])]
    needs_marker = iptc.get(IPTC_CHARSET) != IPTC_UTF8 and (bool(changes) or not all(t.isascii() for t in texts))
    if needs_marker and not stored_as_utf8:
        # The UTF-8 marker re-labels every dataset: re-encode the non-ASCII ones
        # (Latin-1 keywords, bylines...) so they keep their meaning.
        for key, value in iptc.items():
            values = value if isinstance(value, list) else [value]
            if key not in changes and key != IPTC_CHARSET and any(
                isinstance(v, str) and not v.isascii() for v in values
            ):
                changes[key] = value
    if needs_marker:
        changes[IPTC_CHARSET] = IPTC_UTF8
    return changes


def ascii_exif_changes(exif: dict[str, Any], key: str, text: str) -> dict[str, Any]:
    """The change that makes the ASCII EXIF tag *key* hold *text* ({} when it does)."""
    current = exif.get(key)
    if text.isascii():
        return {} if current == text else {key: text}
    # An ASCII EXIF tag cannot hold the text: an older value is removed so that readers
    # preferring EXIF do not show it.
    return {key: None} if current is not None else {}
