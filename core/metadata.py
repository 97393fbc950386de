"""Captions in photo metadata: write-back (XMP, IPTC, EXIF) and reading them for import.

Where a caption goes, per the Metadata Working Group's guidance:

* XMP ``dc:description`` (``x-default``; other languages already there are kept);
* IPTC IIM ``Caption-Abstract``, with the UTF-8 character-set marker
  (``Iptc.Envelope.CharacterSet = ESC % G``) — without it readers decode non-ASCII text as
  Latin-1 and show mojibake;
* EXIF ``ImageDescription`` only when the caption is ASCII (the EXIF type is ASCII);
  a different old value is removed rather than left to contradict the new caption, and
  the removal is reported (``WriteOutcome.removed_exif_description``, the job's
  ``problems``): the old text is not lost silently.

Sidecar names (``SIDECAR_NAMINGS``): ``full`` = ``photo.jpg.xmp`` (digiKam, darktable),
``stem`` = ``photo.xmp`` (Lightroom, Capture One, exiftool), and the default ``auto``
(``DEFAULT_SIDECAR_NAMING``): ``stem`` for camera RAW files, ``full`` for everything else,
since Lightroom reads sidecars only of RAW files (it reads a JPEG's, TIFF's, PNG's metadata
inside the file) while digiKam and darktable look for ``photo.heic.xmp``.
A RAW+JPEG pair (``IMG_2.CR2`` + ``IMG_2.JPG``) shares a stem, and Lightroom's
``IMG_2.xmp`` belongs to the RAW: a stem-named sidecar is therefore only used (written
or read) for an image no other file shares the stem with; otherwise the full name is.

JPEG, PNG and TIFF get all three in the file; WebP gets XMP and EXIF (it has no IPTC).
HEIC/HEIF/AVIF/GIF/BMP (and RAW files, should they be added) get an ``.xmp`` sidecar,
as does any file when the caller asks for sidecars: the original is then not touched.

Safety of a write into a photo:

* the new file is built in memory by exiv2 (through pyexiv2), written to a hidden
  temporary file beside the original, fsynced and renamed over it (``os.replace``): a
  crash leaves either the old or the new file, never half of one;
* before the rename, the image data of the old and new file are compared — for JPEG,
  PNG and WebP the compressed pixel stream byte for byte (cheap, exact), for others the
  decoded pixels — and the write is refused if they differ;
* other metadata is kept (exiv2 edits only the tags it is given); permissions are kept.

pyexiv2 bundles libexiv2 (GPLv3, hence CaptionDesk's GPL licence).  It is imported on
first use so the rest of CaptionDesk works without it.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat as stat_module
import sys
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from xml.etree import ElementTree

from sqlalchemy import update

from core.errors import UserFacingError
from core.filenames import to_os
from core.fingerprint import fingerprint_file
from core.imaging import IMAGE_EXTENSIONS
from core.inputs import regular_file_refusal
from core.jobs import (
    NEVER_CANCELLED,
    CancelToken,
    JobStats,
    Progress,
    ProgressCallback,
    Throttle,
    count_phrase,
    no_progress,
)
from core.models import Image, ImageState

if TYPE_CHECKING:
    from core.library import Library
    from core.export import CaptionedImage

#: Formats whose files carry the caption themselves (exiv2 writes these).
IN_FILE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".tif", ".tiff", ".webp"})
#: Of those, the ones with an IPTC block (WebP has none).
IPTC_SUFFIXES = IN_FILE_SUFFIXES - {".webp"}
SIDECAR_SUFFIX = ".xmp"
#: An XMP sidecar larger than this is not read: real ones hold kilobytes, and the whole
#: packet is read into memory.
MAX_SIDECAR_BYTES = 16 * 1024 * 1024
#: ``auto``: ``stem`` for RAW files, else ``full``; ``stem``: ``photo.xmp``; ``full``:
#: ``photo.jpg.xmp`` (see the module doc).
SIDECAR_NAMINGS = ("auto", "stem", "full")
DEFAULT_SIDECAR_NAMING = "auto"
#: Camera RAW formats: not captioned, but they share a stem (and Lightroom's sidecar) with
#: the JPEG shot beside them.
RAW_EXTENSIONS = frozenset({
    ".3fr", ".arw", ".cr2", ".cr3", ".crw", ".dcr", ".dng", ".erf", ".iiq", ".k25", ".kdc", ".mef",
    ".mos", ".mrw", ".nef", ".nrw", ".orf", ".pef", ".raf", ".raw", ".rw2", ".rwl", ".sr2", ".srf",
    ".srw", ".x3f",
})
#: Characters XML 1.0 cannot hold: exiv2 stores them in XMP as spaces, so the caption is
#: written with spaces in every field (else each run would see a difference and rewrite).
_NOT_XML_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

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

_EMPTY_XMP_PACKET = (
    b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
    b' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/>\n'
    b"</x:xmpmeta>\n"
    b'<?xpacket end="w"?>'
)


class MetadataError(UserFacingError):
    """A metadata read or write that failed for one file (the message says why).

    The message is made one line: exiv2's texts end in a newline (blank lines on
    stderr, ``\\n`` in ``--json``).
    """

    def __init__(self, message: object = "") -> None:
        super().__init__("; ".join(line.strip() for line in str(message).splitlines() if line.strip()))


class MetadataUnavailable(MetadataError):
    """pyexiv2 is not installed."""


_pyexiv2_module: Any = None


def _pyexiv2() -> Any:
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


# -- sidecars -------------------------------------------------------------------------


def validate_sidecar_naming(naming: str) -> str:
    if naming not in SIDECAR_NAMINGS:
        raise ValueError(f"sidecar naming must be one of {', '.join(SIDECAR_NAMINGS)}, not {naming!r}")
    return naming


def _shares_stem(path: Path) -> bool:
    """Whether another image or RAW file in *path*'s folder has the same stem (a RAW+JPEG pair)."""
    try:
        return any(
            other.name != path.name and other.suffix.lower() in IMAGE_EXTENSIONS | RAW_EXTENSIONS
            for other in path.parent.glob(f"{_glob_escape(path.stem)}.*")
        )
    except OSError:
        return True  # cannot tell: the full name is never someone else's


def sidecar_path(image_path: Path | str, naming: str = DEFAULT_SIDECAR_NAMING) -> Path:
    """The ``.xmp`` sidecar to write for *image_path*.

    *naming* ``full``: ``IMG_1.JPG.xmp``.  ``stem``: ``IMG_1.xmp`` — unless the full-name
    one already exists (it is updated, never duplicated), or another image or RAW file
    shares the stem (``IMG_1.CR2`` beside ``IMG_1.JPG``: ``IMG_1.xmp`` is the RAW's), in
    which case the full name keeps them apart.  ``auto``: ``stem`` for a RAW file, else
    ``full`` — unless the image's own stem-named sidecar already exists (it is updated).
    """
    path = Path(image_path)
    full_name = path.with_name(path.name + SIDECAR_SUFFIX)
    naming = validate_sidecar_naming(naming)
    if naming == "auto":
        # A stem sidecar written earlier is updated: two sidecars would contradict each other.
        own_stem = not full_name.exists() and path.with_suffix(SIDECAR_SUFFIX).exists() and not _shares_stem(path)
        naming = "stem" if own_stem or path.suffix.lower() in RAW_EXTENSIONS else "full"
    if naming == "full" or full_name.exists() or _shares_stem(path):
        return full_name
    return path.with_suffix(SIDECAR_SUFFIX)


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _existing_sidecar(image_path: Path) -> Path | None:
    """*image_path*'s own sidecar: the full-name one, or the stem one if no pair shares it.

    Anything by that name counts (a FIFO too), so the reader can say why it is not read.
    """
    full_name = image_path.with_name(image_path.name + SIDECAR_SUFFIX)
    if full_name.exists():
        return full_name
    stem_name = image_path.with_suffix(SIDECAR_SUFFIX)
    if stem_name.exists() and not _shares_stem(image_path):
        return stem_name
    return None


# -- reading --------------------------------------------------------------------------


@dataclass(frozen=True)
class FoundCaption:
    """A caption found in metadata: the text, the field (xmp/iptc/exif) and the file."""

    text: str
    field: str
    location: Path


def _lang_alt_text(value: Any) -> str | None:
    """The x-default entry of an XMP language alternative, else its first entry."""
    if isinstance(value, dict):
        text = value.get(X_DEFAULT)
        if text is None and value:
            text = next(iter(value.values()))
        return text
    if isinstance(value, str):
        return value
    return None


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.replace("\x00", "").strip()
    return text or None


def _read_iptc(image: Any) -> tuple[dict[str, Any], bool]:
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


def _utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _open_file(path: Path) -> Any:
    pyexiv2 = _pyexiv2()
    # pyexiv2 cannot open non-ASCII paths on Windows, nor (anywhere) a name that is not
    # valid UTF-8 (surrogate-escaped bytes): read the bytes ourselves then.
    if sys.platform == "win32" or not str(path).isascii() and not _utf8_encodable(str(path)):
        return pyexiv2.ImageData(path.read_bytes())
    return pyexiv2.Image(str(path))


def _xmp_text_from_packet(packet: bytes | str, *, strict: bool = False) -> str | None:
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


def _read_with_pillow(path: Path) -> tuple[str | None, str | None]:
    """XMP and EXIF descriptions through Pillow (pillow-heif reads HEIC/AVIF items)."""
    from PIL import Image as PILImage

    import core.imaging  # noqa: F401 - registers the HEIF opener

    with PILImage.open(path) as im:
        packet = im.info.get("xmp")
        xmp_text = _xmp_text_from_packet(packet) if packet else None
        exif_text = im.getexif().get(0x010E)
    return xmp_text, exif_text if isinstance(exif_text, str) else None


def _read_sidecar(sidecar: Path, within: Path | None) -> bytes:
    """*sidecar*'s bytes; :class:`MetadataError` for a link leading out of *within* (checked
    before anything is opened), a file that is not regular or one over :data:`MAX_SIDECAR_BYTES`."""
    if within is not None:
        try:
            inside = sidecar.resolve().is_relative_to(within.resolve())
        except (OSError, RuntimeError, ValueError):  # symlink loops, NUL in the name
            inside = False
        if not inside:
            raise MetadataError(f"{sidecar}: a link leading outside {within}; not read")
    try:
        fd = os.open(sidecar, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block
        try:
            info = os.fstat(fd)
            if not stat_module.S_ISREG(info.st_mode):
                raise MetadataError(f"{sidecar}: {regular_file_refusal(info.st_mode)}; not read")
            if info.st_size > MAX_SIDECAR_BYTES:
                raise MetadataError(f"{sidecar}: {info.st_size:,} bytes, more than an XMP sidecar "
                                    f"({MAX_SIDECAR_BYTES:,}); not read")
            return os.read(fd, MAX_SIDECAR_BYTES + 1)
        finally:
            os.close(fd)
    except OSError as exc:
        raise MetadataError(f"cannot read {sidecar}: {exc.strerror or exc}") from None


def read_caption(path: Path | str, *, within: Path | None = None) -> FoundCaption | None:
    """The caption stored in *path*'s metadata, or None.

    Looked for in this order: an XMP sidecar (written by CaptionDesk's sidecar mode,
    Lightroom, darktable...), then XMP dc:description, IPTC Caption-Abstract and EXIF
    ImageDescription in the file.  Camera boilerplate ("OLYMPUS DIGITAL CAMERA") is not a
    caption.  Raises :class:`MetadataError` when the file's metadata cannot be read, and
    for a sidecar that is a link leading outside *within* (an import's source) or too big.
    """
    path = Path(path)
    sidecar = _existing_sidecar(path)
    if sidecar is not None:
        packet = _read_sidecar(sidecar, within)
        try:
            text = _clean(_xmp_text_from_packet(packet, strict=True))
        except ValueError as exc:
            # The sidecar outranks the photo's own fields: a damaged one is reported, not bypassed.
            raise MetadataError(f"cannot parse the XMP sidecar {sidecar} ({exc}); this photo's caption "
                                "is not imported until the sidecar is fixed or removed") from None
        if text:
            return FoundCaption(text, "xmp", sidecar)
    try:
        with _open_file(path) as image:
            xmp_text = _clean(_lang_alt_text(image.read_xmp().get(XMP_DESCRIPTION)))
            iptc, _utf8 = _read_iptc(image)
            iptc_text = _clean(iptc.get(IPTC_CAPTION))
            exif_text = _clean(image.read_exif().get(EXIF_DESCRIPTION))
    except MetadataUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - exiv2 raises RuntimeError and friends
        raise MetadataError(f"cannot read metadata of {path}: {exc}") from None
    if not xmp_text and not exif_text and path.suffix.lower() not in IN_FILE_SUFFIXES:
        # exiv2 misses XMP that exiftool stores in HEIC/AVIF; Pillow finds the item.
        try:
            xmp_text, exif_text = (_clean(t) for t in _read_with_pillow(path))
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
        with _open_file(path) as image:
            subject = image.read_xmp().get("Xmp.dc.subject")
            iptc, _utf8 = _read_iptc(image)
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


# -- pixel-data comparison ------------------------------------------------------------

# JPEG segments exiv2 edits: APP1 (EXIF, XMP) and APP13 (Photoshop IRB holding IPTC).
_JPEG_METADATA_MARKERS = frozenset({0xE1, 0xED})
# exiv2 moves a COM comment after the tables and ends it with a NUL: its text must survive.
_JPEG_COMMENT = 0xFE
_PNG_METADATA_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt", b"eXIf"})
_WEBP_METADATA_CHUNKS = frozenset({b"EXIF", b"XMP "})


def _jpeg_image_digest(data: bytes) -> bytes | None:
    """Hash of every JPEG segment but the metadata ones, and all data from the first scan on.

    Comments count by their text (in order), not by their place among the segments.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    digest = hashlib.blake2b()
    comments = hashlib.blake2b()
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker == 0xDA:  # start of scan: entropy-coded data (and any later scans)
            digest.update(data[pos:])
            return digest.digest() + comments.digest()
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == _JPEG_COMMENT:
            text = data[pos + 4 : pos + 2 + length].rstrip(b"\0")
            comments.update(len(text).to_bytes(4, "big") + text)
        elif marker not in _JPEG_METADATA_MARKERS:
            digest.update(data[pos : pos + 2 + length])
        pos += 2 + length
    return None


def _png_image_digest(data: bytes) -> bytes | None:
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    digest = hashlib.blake2b()
    pos, end = 8, len(data)
    while pos + 12 <= end:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind not in _PNG_METADATA_CHUNKS:
            digest.update(data[pos : pos + 12 + length])
        pos += 12 + length
        if kind == b"IEND":
            return digest.digest()
    return None


def _webp_image_digest(data: bytes) -> bytes | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    digest = hashlib.blake2b()
    pos, end = 12, len(data)
    while pos + 8 <= end:
        kind = data[pos : pos + 4]
        length = int.from_bytes(data[pos + 4 : pos + 8], "little")
        payload = data[pos + 8 : pos + 8 + length]
        # VP8X (feature flags + canvas size) is added or changed by metadata edits; the
        # VP8/VP8L bitstreams (and ANMF frames) carry the image's own size.
        if kind not in _WEBP_METADATA_CHUNKS and kind != b"VP8X":
            digest.update(kind + payload)
        pos += 8 + length + (length & 1)
    return digest.digest()


def _decoded_frames(data: bytes) -> list[tuple[str, tuple[int, int], bytes]]:
    from PIL import Image as PILImage

    frames = []
    with PILImage.open(io.BytesIO(data)) as im:
        for index in range(getattr(im, "n_frames", 1)):
            im.seek(index)
            frames.append((im.mode, im.size, im.tobytes()))
    return frames


def same_image_data(before: bytes, after: bytes) -> bool:
    """Whether two versions of a file hold the same image data (metadata aside)."""
    for digest in (_jpeg_image_digest, _png_image_digest, _webp_image_digest):
        old = digest(before)
        if old is not None:
            return old == digest(after)
    try:
        return _decoded_frames(before) == _decoded_frames(after)
    except Exception:  # noqa: BLE001 - undecodable after the edit: certainly not the same
        return False


# -- writing --------------------------------------------------------------------------


#: Temporary files beside photos: ``.cd-<pid>-<random>.tmp`` (short: a name near the
#: 255-byte limit must still get one; the pid tells a dead writer's leftover apart).
_TEMPORARY_PATTERN = re.compile(r"^\.cd-(\d+)-[0-9a-f]{8}\.tmp$")


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporary files a killed write left in *folder* (their process is gone)."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        match = _TEMPORARY_PATTERN.match(entry.name)
        if match is None or _process_alive(int(match.group(1))):
            continue
        try:
            os.unlink(entry.path)
            removed += 1
        except OSError:
            pass
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if sys.platform == "win32":  # os.kill would end the process there: keep the file
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def _atomic_write(target: Path, data: bytes, mode: int | None = None) -> None:
    """Write *data* to a hidden temporary file beside *target*, fsync, rename over it."""
    temporary = target.with_name(f".cd-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(temporary, stat_module.S_IMODE(mode))
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (not possible on Windows)
        fd = os.open(target.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _xmp_changes(image: Any, text: str) -> dict[str, Any]:
    current = image.read_xmp().get(XMP_DESCRIPTION)
    alternatives = dict(current) if isinstance(current, dict) else {}
    if alternatives.get(X_DEFAULT) == text:
        return {}
    alternatives[X_DEFAULT] = text  # other languages stay as they were
    return {XMP_DESCRIPTION: alternatives}


def iptc_caption_text(text: str) -> str:
    """*text* cut to what IPTC Caption-Abstract may hold, at a UTF-8 character boundary."""
    data = text.encode("utf-8")
    if len(data) <= IPTC_CAPTION_MAX_BYTES:
        return text
    return data[:IPTC_CAPTION_MAX_BYTES].decode("utf-8", "ignore")


def _iptc_changes(image: Any, text: str) -> dict[str, Any]:
    text = iptc_caption_text(text)  # XMP keeps the full caption
    iptc, stored_as_utf8 = _read_iptc(image)
    changes: dict[str, Any] = {}
    if iptc.get(IPTC_CAPTION) != text:
        changes[IPTC_CAPTION] = text
    needs_marker = iptc.get(IPTC_CHARSET) != IPTC_UTF8 and (bool(changes) or not text.isascii())
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


def _exif_changes(image: Any, text: str) -> dict[str, Any]:
    current = image.read_exif().get(EXIF_DESCRIPTION)
    if text.isascii():
        return {} if current == text else {EXIF_DESCRIPTION: text}
    # EXIF ImageDescription is ASCII: a non-ASCII caption is not written there, and an
    # older description is removed so that readers preferring EXIF do not show it.
    return {EXIF_DESCRIPTION: None} if current is not None else {}


@dataclass(frozen=True)
class WriteOutcome:
    """Where a caption went and whether anything had to change."""

    target: Path
    changed: bool
    in_file: bool
    fields: tuple[str, ...] = ()
    #: An older EXIF ImageDescription removed because the caption is not ASCII.
    removed_exif_description: str | None = None
    #: The caption was longer than IPTC allows: IPTC holds its beginning, XMP all of it.
    iptc_truncated: bool = False


def _write_in_file(path: Path, text: str, dry_run: bool = False) -> WriteOutcome:
    pyexiv2 = _pyexiv2()
    before = path.read_bytes()
    mode = os.stat(path).st_mode
    suffix = path.suffix.lower()
    try:
        with pyexiv2.ImageData(before) as image:
            xmp = _xmp_changes(image, text)
            iptc = _iptc_changes(image, text) if suffix in IPTC_SUFFIXES else {}
            exif = _exif_changes(image, text)
            removed = image.read_exif().get(EXIF_DESCRIPTION) if exif.get(EXIF_DESCRIPTION, "") is None else None
            if not (xmp or iptc or exif):
                return WriteOutcome(path, changed=False, in_file=True)
            # A dry run builds the new file in memory too: its count of files that cannot
            # be written must be the real run's.
            if xmp:
                image.modify_xmp(xmp)
            if iptc:
                image.modify_iptc(iptc)
            if exif:
                image.modify_exif(exif)
            after = image.get_bytes()
    except MetadataUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - exiv2 reports unsupported/corrupt files this way
        raise MetadataError(f"cannot write metadata into {path.name}: {exc}") from None
    if not same_image_data(before, after):
        raise MetadataError(f"{path.name}: writing metadata would change the image data; file left as it was")
    fields = tuple(name for name, changes in (("xmp", xmp), ("iptc", iptc), ("exif", exif)) if changes)
    truncated = IPTC_CAPTION in iptc and iptc_caption_text(text) != text
    if dry_run:
        return WriteOutcome(path, changed=True, in_file=True, fields=fields, iptc_truncated=truncated)
    _atomic_write(path, after, mode)
    return WriteOutcome(
        path, changed=True, in_file=True, fields=fields, removed_exif_description=removed, iptc_truncated=truncated
    )


def _write_sidecar(
    image_path: Path, text: str, naming: str = DEFAULT_SIDECAR_NAMING, dry_run: bool = False
) -> WriteOutcome:
    pyexiv2 = _pyexiv2()
    target = sidecar_path(image_path, naming)
    if target.is_symlink():
        # Reading it would copy another file's text into the library's folder.
        raise MetadataError(f"the sidecar {target.name} is a symbolic link; not written")
    existing = _read_sidecar(target, None) if os.path.lexists(target) else None
    packet = existing if existing is not None else _EMPTY_XMP_PACKET
    try:
        with pyexiv2.ImageData(packet) as sidecar:
            changes = _xmp_changes(sidecar, text)
            if not changes:
                return WriteOutcome(target, changed=False, in_file=False)
            if dry_run:
                return WriteOutcome(target, changed=True, in_file=False, fields=("xmp",))
            sidecar.modify_xmp(changes)
            data = sidecar.get_bytes()
    except MetadataUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - an unparsable sidecar is left as it is
        raise MetadataError(f"cannot update the sidecar {target.name}: {exc}") from None
    mode = os.stat(target).st_mode if existing is not None else None
    _atomic_write(target, data, mode)
    return WriteOutcome(target, changed=True, in_file=False, fields=("xmp",))


def metadata_text(text: str) -> str:
    """*text* as the metadata will hold it: control characters XML cannot carry become
    spaces (what exiv2 would store anyway), ends stripped."""
    return _NOT_XML_CHARACTERS.sub(" ", text).strip()


def write_caption(
    path: Path | str, text: str, *, sidecar: bool = False, sidecar_naming: str = DEFAULT_SIDECAR_NAMING,
    dry_run: bool = False,
) -> WriteOutcome:
    """Store *text* as the caption in *path*'s metadata (see module doc for where).

    Returns what was done; ``changed`` is False when the metadata already said so.
    With *dry_run* nothing is written: the outcome says what a real call would do.
    Raises :class:`MetadataError` (nothing written) or OSError from the file system.
    """
    text = metadata_text(text)
    if not text:
        raise MetadataError("an empty caption is not written")
    real = Path(os.path.realpath(path))  # a symlink keeps pointing at the updated photo
    if not real.is_file():
        raise FileNotFoundError(2, "file not found", str(path))
    if sidecar or real.suffix.lower() not in IN_FILE_SUFFIXES:
        return _write_sidecar(real, text, sidecar_naming, dry_run)
    return _write_in_file(real, text, dry_run)


# -- the job --------------------------------------------------------------------------


@dataclass
class MetadataWriteStats(JobStats):
    """What a write-metadata run did; ``problems`` names each file that failed and why."""

    TITLE: ClassVar[str] = "Writing metadata"

    #: Older EXIF ImageDescriptions removed for a non-ASCII caption (each named in problems).
    exif_descriptions_removed: int = 0
    #: Captions over IPTC's length limit, cut there (each named in problems; XMP is whole).
    iptc_truncated: int = 0
    written: int = 0
    sidecars: int = 0
    unchanged: int = 0
    skipped: int = 0
    missing: int = 0
    errors: int = 0

    def summary(self) -> str:
        return (
            f"{self.TITLE} {'cancelled' if self.cancelled else 'finished'}: "
            f"captions written into {count_phrase(self.written, 'file', 'files')} and "
            f"{count_phrase(self.sidecars, '.xmp sidecar', '.xmp sidecars')}; "
            f"{self.unchanged} already up to date, {self.missing} missing, {self.errors} failed"
        )


#: Records updated per transaction after in-file writes.
_DB_BATCH = 200


def write_metadata(
    library: Library,
    *,
    sidecar: bool = False,
    sidecar_naming: str = DEFAULT_SIDECAR_NAMING,
    only: str = "captioned",
    folder: Path | str | None = None,
    image_ids: Collection[int] | None = None,
    dry_run: bool = False,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken = NEVER_CANCELLED,
) -> MetadataWriteStats:
    """Write every selected image's current caption into its metadata (or a sidecar).

    *only*, *folder* and *image_ids* select images as for export.  With *dry_run*
    nothing is written and no job is recorded: every file is read and the stats count
    what a real run would change (what the GUI shows before it changes anything).  A file written in place gets a
    new size, mtime and fingerprint; the image's record is updated to match (only if
    the file was as the last scan saw it) so the next scan does not report it changed.
    Recorded as a ``write-metadata`` job.
    """
    from core.export import count_captioned_images, folder_scope, iter_captioned_images

    validate_sidecar_naming(sidecar_naming)
    _pyexiv2()  # fail before starting when pyexiv2 is missing
    db = library.db
    folder_filter = folder_scope(db, folder) if folder is not None else None
    total = count_captioned_images(db, only=only, folder=folder_filter, image_ids=image_ids)
    pending_updates: list[dict[str, Any]] = []
    done = 0

    def flush_updates() -> None:
        if not pending_updates:
            return
        with db.write() as session:
            for row in pending_updates:
                # Guarded on what we saw: a scan that got there first wins.
                session.execute(
                    update(Image)
                    .where(Image.id == row["id"], Image.size == row["old_size"], Image.mtime_ns == row["old_mtime_ns"])
                    .values(size=row["size"], mtime_ns=row["mtime_ns"], fingerprint=row["fingerprint"])
                )
        pending_updates.clear()

    images = iter_captioned_images(db, only=only, folder=folder_filter, image_ids=image_ids)
    if dry_run:
        # Nothing is written and no job is recorded: count what a real run would change.
        stats = MetadataWriteStats()
        throttle = Throttle(0.1)
        for image in images:
            if cancel.is_set():
                stats.cancelled = True
                break
            done += 1
            _write_one(image, sidecar, stats, sidecar_naming, dry_run=True)
            if throttle.ready():
                progress(Progress(done, total, "Checking what would change", stats.counts()))
        progress(Progress(done, total, "Cancelled" if stats.cancelled else "Checked", stats.counts()))
        return stats
    params = {
        "sidecar": sidecar, "sidecar_naming": sidecar_naming, "only": only,
        "folder": str(folder) if folder is not None else None,
        "image_ids": len(image_ids) if image_ids is not None else None,
    }
    cleaned_folders: set[Path] = set()
    with library.job("write-metadata", params, MetadataWriteStats(), progress) as run:
        stats = run.stats
        for image in images:
            folder_of_image = Path(image.path).parent
            if folder_of_image not in cleaned_folders:  # once per folder: a killed run's leftovers
                cleaned_folders.add(folder_of_image)
                remove_stale_temporaries(folder_of_image)
            if cancel.is_set():
                stats.cancelled = True
                break
            done += 1
            update_row = _write_one(image, sidecar, stats, sidecar_naming)
            if update_row is not None:
                pending_updates.append(update_row)
                if len(pending_updates) >= _DB_BATCH:
                    flush_updates()
            run.progress(done, total, "Writing captions into metadata")
        flush_updates()
        run.progress(done, total, "Cancelled" if stats.cancelled else "Finished", force=True)
    return stats


def _link_refusal(image: CaptionedImage) -> str | None:
    """Why *image*'s file is not written through (a link, or a file outside its library
    folder by way of a linked folder), else None: the import refuses such links too."""
    path = image.path
    try:
        if path.is_symlink():
            return "a symbolic link; metadata is not written through links (write into the file it points to)"
        inside = Path(os.path.realpath(path)).is_relative_to(os.path.realpath(to_os(image.root_path)))
    except (OSError, ValueError):
        return None  # the write itself reports what is wrong with the file
    if not inside:
        return f"its real file is outside the library folder {image.root_path} (a linked folder); not written"
    return None


def _write_one(
    image: CaptionedImage, sidecar: bool, stats: MetadataWriteStats,
    sidecar_naming: str = DEFAULT_SIDECAR_NAMING, *, dry_run: bool = False
) -> dict[str, Any] | None:
    """Write one image's caption; returns the record update due after an in-file write."""
    path = image.path
    if image.state == ImageState.MISSING:
        stats.missing += 1
        stats.problems.append(f"{path}: missing (last scan did not find it)")
        return None
    if not image.text.strip():
        stats.skipped += 1
        return None
    refused = _link_refusal(image)
    if refused is not None:
        stats.errors += 1
        stats.problems.append(f"{path}: {refused}")
        return None
    try:
        before = os.stat(path)
        outcome = write_caption(path, image.text, sidecar=sidecar, sidecar_naming=sidecar_naming, dry_run=dry_run)
    except FileNotFoundError:
        stats.missing += 1
        stats.problems.append(f"{path}: missing (not found now; rescan the library)")
        return None
    except MetadataUnavailable:
        raise
    except MetadataError as exc:
        stats.errors += 1
        stats.problems.append(f"{path}: {exc}")
        return None
    except OSError as exc:
        stats.errors += 1
        stats.problems.append(f"{path}: {exc.strerror or exc}")
        return None
    if not outcome.changed:
        stats.unchanged += 1
        return None
    if not outcome.in_file:
        stats.sidecars += 1
        return None
    stats.written += 1
    if outcome.removed_exif_description is not None:
        stats.exif_descriptions_removed += 1
        stats.problems.append(
            f"{path}: older EXIF ImageDescription {outcome.removed_exif_description!r} removed "
            "(EXIF holds ASCII only; the caption is in XMP and IPTC)"
        )
    if outcome.iptc_truncated:
        stats.iptc_truncated += 1
        stats.problems.append(
            f"{path}: caption of {len(image.text.encode('utf-8'))} bytes cut to IPTC's "
            f"{IPTC_CAPTION_MAX_BYTES} in IPTC Caption-Abstract (XMP holds all of it)"
        )
    if dry_run:
        return None
    if (before.st_size, before.st_mtime_ns) != (image.size, image.mtime_ns):
        return None  # changed since the scan for other reasons: let the scanner look at it
    after = os.stat(outcome.target)
    return {
        "id": image.image_id,
        "old_size": image.size,
        "old_mtime_ns": image.mtime_ns,
        "size": after.st_size,
        "mtime_ns": after.st_mtime_ns,
        "fingerprint": fingerprint_file(outcome.target, after.st_size),
    }


