"""Captions in photo metadata: write-back (XMP, IPTC, EXIF) and reading them for import.

Where a caption goes, per the Metadata Working Group's guidance:

* XMP ``dc:description`` (``x-default``; other languages already there are kept);
* IPTC IIM ``Caption-Abstract``, with the UTF-8 character-set marker
  (``Iptc.Envelope.CharacterSet = ESC % G``) — without it readers decode non-ASCII text as
  Latin-1 and show mojibake;
* EXIF ``ImageDescription`` only when the caption is ASCII (the EXIF type is ASCII);
  a different old value is removed rather than left to contradict the new caption.

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
import stat as stat_module
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from xml.etree import ElementTree

from sqlalchemy import update

from core.fingerprint import fingerprint_file
from core.imaging import IMAGE_EXTENSIONS
from core.jobs import NEVER_CANCELLED, CancelToken, JobStats, ProgressCallback, count_phrase, no_progress
from core.models import Image, ImageState

if TYPE_CHECKING:
    from core.library import Library
    from core.export import CaptionedImage

#: Formats whose files carry the caption themselves (exiv2 writes these).
IN_FILE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".tif", ".tiff", ".webp"})
#: Of those, the ones with an IPTC block (WebP has none).
IPTC_SUFFIXES = IN_FILE_SUFFIXES - {".webp"}
SIDECAR_SUFFIX = ".xmp"

XMP_DESCRIPTION = "Xmp.dc.description"
X_DEFAULT = 'lang="x-default"'
IPTC_CAPTION = "Iptc.Application2.Caption"
IPTC_CHARSET = "Iptc.Envelope.CharacterSet"
#: ISO 2022 escape sequence that declares UTF-8 in IPTC IIM.
IPTC_UTF8 = "\x1b%G"
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


class MetadataError(Exception):
    """A metadata read or write that failed for one file (the message says why)."""


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


def sidecar_path(image_path: Path | str) -> Path:
    """The ``.xmp`` sidecar for *image_path*.

    ``IMG_1.xmp`` (Adobe's and exiftool's naming) unless ``IMG_1.HEIC.xmp`` (darktable's
    and digiKam's) already exists, or another image in the folder shares the stem
    (``IMG_1.HEIC`` beside ``IMG_1.JPG``): then the full-name form keeps them apart.
    """
    path = Path(image_path)
    full_name = path.with_name(path.name + SIDECAR_SUFFIX)
    if full_name.exists():
        return full_name
    try:
        siblings = [
            other for other in path.parent.glob(f"{_glob_escape(path.stem)}.*")
            if other.name != path.name and other.suffix.lower() in IMAGE_EXTENSIONS
        ]
    except OSError:
        siblings = []
    return full_name if siblings else path.with_suffix(SIDECAR_SUFFIX)


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _existing_sidecar(image_path: Path) -> Path | None:
    for candidate in (image_path.with_name(image_path.name + SIDECAR_SUFFIX), image_path.with_suffix(SIDECAR_SUFFIX)):
        if candidate.is_file():
            return candidate
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


def _open_file(path: Path) -> Any:
    pyexiv2 = _pyexiv2()
    if sys.platform == "win32":  # pyexiv2 cannot open non-ASCII paths on Windows
        return pyexiv2.ImageData(path.read_bytes())
    return pyexiv2.Image(str(path))


def _xmp_text_from_packet(packet: bytes | str) -> str | None:
    """dc:description from a raw XMP packet (for what exiv2 cannot read in HEIC/AVIF)."""
    if isinstance(packet, str):
        packet = packet.encode("utf-8")
    start = packet.find(b"<x:xmpmeta")
    end = packet.rfind(b"</x:xmpmeta>")
    if start < 0 or end < 0:
        return None
    try:
        root = ElementTree.fromstring(packet[start : end + len(b"</x:xmpmeta>")])
    except ElementTree.ParseError:
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


def read_caption(path: Path | str) -> FoundCaption | None:
    """The caption stored in *path*'s metadata, or None.

    Looked for in this order: an XMP sidecar (written by CaptionDesk's sidecar mode,
    Lightroom, darktable...), then XMP dc:description, IPTC Caption-Abstract and EXIF
    ImageDescription in the file.  Camera boilerplate ("OLYMPUS DIGITAL CAMERA") is not a
    caption.  Raises :class:`MetadataError` when the file's metadata cannot be read.
    """
    path = Path(path)
    sidecar = _existing_sidecar(path)
    if sidecar is not None:
        try:
            text = _clean(_xmp_text_from_packet(sidecar.read_bytes()))
        except OSError as exc:
            raise MetadataError(f"cannot read {sidecar}: {exc.strerror or exc}") from None
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


# -- pixel-data comparison ------------------------------------------------------------

# JPEG segments exiv2 edits: APP1 (EXIF, XMP) and APP13 (Photoshop IRB holding IPTC).
_JPEG_METADATA_MARKERS = frozenset({0xE1, 0xED})
_PNG_METADATA_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt", b"eXIf"})
_WEBP_METADATA_CHUNKS = frozenset({b"EXIF", b"XMP "})


def _jpeg_image_digest(data: bytes) -> bytes | None:
    """Hash of every JPEG segment but the metadata ones, and all data from the first scan on."""
    if not data.startswith(b"\xff\xd8"):
        return None
    digest = hashlib.blake2b()
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
            return digest.digest()
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker not in _JPEG_METADATA_MARKERS:
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


def _atomic_write(target: Path, data: bytes, mode: int | None = None) -> None:
    """Write *data* to a hidden temporary file beside *target*, fsync, rename over it."""
    temporary = target.with_name(f".{target.name}.captiondesk-{uuid.uuid4().hex[:8]}.tmp")
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


def _iptc_changes(image: Any, text: str) -> dict[str, Any]:
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


def _write_in_file(path: Path, text: str) -> WriteOutcome:
    pyexiv2 = _pyexiv2()
    before = path.read_bytes()
    mode = os.stat(path).st_mode
    suffix = path.suffix.lower()
    try:
        with pyexiv2.ImageData(before) as image:
            xmp = _xmp_changes(image, text)
            iptc = _iptc_changes(image, text) if suffix in IPTC_SUFFIXES else {}
            exif = _exif_changes(image, text)
            if not (xmp or iptc or exif):
                return WriteOutcome(path, changed=False, in_file=True)
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
    _atomic_write(path, after, mode)
    fields = tuple(name for name, changes in (("xmp", xmp), ("iptc", iptc), ("exif", exif)) if changes)
    return WriteOutcome(path, changed=True, in_file=True, fields=fields)


def _write_sidecar(image_path: Path, text: str) -> WriteOutcome:
    pyexiv2 = _pyexiv2()
    target = sidecar_path(image_path)
    try:
        existing = target.read_bytes()
    except FileNotFoundError:
        existing = None
    packet = existing if existing is not None else _EMPTY_XMP_PACKET
    try:
        with pyexiv2.ImageData(packet) as sidecar:
            changes = _xmp_changes(sidecar, text)
            if not changes:
                return WriteOutcome(target, changed=False, in_file=False)
            sidecar.modify_xmp(changes)
            data = sidecar.get_bytes()
    except MetadataUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - an unparsable sidecar is left as it is
        raise MetadataError(f"cannot update the sidecar {target.name}: {exc}") from None
    mode = os.stat(target).st_mode if existing is not None else None
    _atomic_write(target, data, mode)
    return WriteOutcome(target, changed=True, in_file=False, fields=("xmp",))


def write_caption(path: Path | str, text: str, *, sidecar: bool = False) -> WriteOutcome:
    """Store *text* as the caption in *path*'s metadata (see module doc for where).

    Returns what was done; ``changed`` is False when the metadata already said so.
    Raises :class:`MetadataError` (nothing written) or OSError from the file system.
    """
    text = text.strip()
    if not text:
        raise MetadataError("an empty caption is not written")
    real = Path(os.path.realpath(path))  # a symlink keeps pointing at the updated photo
    if not real.is_file():
        raise FileNotFoundError(2, "file not found", str(path))
    if sidecar or real.suffix.lower() not in IN_FILE_SUFFIXES:
        return _write_sidecar(real, text)
    return _write_in_file(real, text)


# -- the job --------------------------------------------------------------------------


@dataclass
class MetadataWriteStats(JobStats):
    """What a write-metadata run did; ``problems`` names each file that failed and why."""

    TITLE: ClassVar[str] = "Writing metadata"

    written: int = 0
    sidecars: int = 0
    unchanged: int = 0
    skipped: int = 0
    missing: int = 0
    errors: int = 0

    def counts(self) -> dict[str, int]:
        return {
            "written": self.written,
            "sidecars": self.sidecars,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "missing": self.missing,
            "errors": self.errors,
        }

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
    only: str = "captioned",
    folder: Path | str | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken = NEVER_CANCELLED,
) -> MetadataWriteStats:
    """Write every selected image's current caption into its metadata (or a sidecar).

    *only* and *folder* select images as for export.  A file written in place gets a
    new size, mtime and fingerprint; the image's record is updated to match (only if
    the file was as the last scan saw it) so the next scan does not report it changed.
    Recorded as a ``write-metadata`` job.
    """
    from core.export import count_captioned_images, folder_scope, iter_captioned_images

    _pyexiv2()  # fail before starting when pyexiv2 is missing
    db = library.db
    folder_filter = folder_scope(db, folder) if folder is not None else None
    total = count_captioned_images(db, only=only, folder=folder_filter)
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

    params = {"sidecar": sidecar, "only": only, "folder": str(folder) if folder is not None else None}
    with library.job("write-metadata", params, MetadataWriteStats(), progress) as run:
        stats = run.stats
        for image in iter_captioned_images(db, only=only, folder=folder_filter):
            if cancel.is_set():
                stats.cancelled = True
                break
            done += 1
            update_row = _write_one(image, sidecar, stats)
            if update_row is not None:
                pending_updates.append(update_row)
                if len(pending_updates) >= _DB_BATCH:
                    flush_updates()
            run.progress(done, total, "Writing captions into metadata")
        flush_updates()
        run.progress(done, total, "Cancelled" if stats.cancelled else "Finished", force=True)
    return stats


def _write_one(image: CaptionedImage, sidecar: bool, stats: MetadataWriteStats) -> dict[str, Any] | None:
    """Write one image's caption; returns the record update due after an in-file write."""
    path = image.path
    if image.state == ImageState.MISSING:
        stats.missing += 1
        stats.problems.append(f"{path}: missing (last scan did not find it)")
        return None
    if not image.text.strip():
        stats.skipped += 1
        return None
    try:
        before = os.stat(path)
        outcome = write_caption(path, image.text, sidecar=sidecar)
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
