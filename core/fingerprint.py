"""A fast content fingerprint that follows a photo when it is moved or renamed.

Hashing whole files would make the first scan of a 100 000-photo library read hundreds
of gigabytes.  Instead we hash the size plus the first and last 64 KiB (the approach of
imohash): JPEG/PNG/HEIC headers, EXIF (with capture time and camera serial) and the end
of the entropy-coded data differ between any two real photos, while a rename or move
keeps all of them.  Files up to 128 KiB are hashed whole.

The fingerprint also keys the thumbnail cache, so it must change when pixels change:
re-encoding or editing a photo rewrites its tail and its size.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from core.inputs import open_regular

CHUNK = 64 * 1024
#: Bumped if the algorithm ever changes, so old and new fingerprints never collide.
_VERSION = b"cd1"


def fingerprint_and_head(path: Path | str, size: int | None = None) -> tuple[str, bytes]:
    """Return the fingerprint of the file at *path* and its first 64 KiB.

    The head comes for free (it is hashed anyway) and lets the scanner read the image
    size from it without opening the file a second time.
    """
    with open_regular(path, "rb", buffering=0) as handle:
        if size is None:
            size = os.fstat(handle.fileno()).st_size
        digest = hashlib.blake2b(_VERSION + size.to_bytes(8, "little"), digest_size=16)
        if size <= 2 * CHUNK:
            data = handle.read()
            digest.update(data)
            head = data[:CHUNK]
        else:
            head = handle.read(CHUNK)
            digest.update(head)
            handle.seek(-CHUNK, os.SEEK_END)
            digest.update(handle.read(CHUNK))
    return digest.hexdigest(), head


def fingerprint_file(path: Path | str, size: int | None = None) -> str:
    """Return a 32-hex-digit fingerprint of the file at *path*."""
    return fingerprint_and_head(path, size)[0]


# -- the image-data key (the train/validation split's identity) -------------------------

#: Prefix of image-data keys, so they never collide with a fingerprint (and can change).
DATA_KEY_PREFIX = "img1:"
# JPEG: every APPn (EXIF, XMP, ICC, JFIF, Photoshop/IPTC...) and COM segment is metadata.
_PNG_METADATA_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME"})
_WEBP_METADATA_CHUNKS = frozenset({b"VP8X", b"EXIF", b"XMP ", b"ICCP"})


class _Reader:
    """Reads at offsets, from the already-read head when it holds the bytes."""

    def __init__(self, fd: int, head: bytes, size: int) -> None:
        self.fd, self.head, self.size = fd, head, size

    def at(self, offset: int, count: int) -> bytes:
        if offset + count <= len(self.head):
            return self.head[offset : offset + count]
        return os.pread(self.fd, count, offset)


def _jpeg_data_key(read: _Reader, digest: Any) -> bool:
    pos, size = 2, read.size
    while pos + 2 <= size:
        header = read.at(pos, 4)
        if len(header) < 2 or header[0] != 0xFF:
            return False
        marker = header[1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker == 0xDA:  # start of scan: the entropy-coded image (and what follows it)
            stream = size - pos
            digest.update(stream.to_bytes(8, "little"))
            digest.update(read.at(pos, CHUNK))
            digest.update(read.at(max(pos, size - CHUNK), CHUNK))
            return True
        if len(header) < 4:
            return False
        length = int.from_bytes(header[2:4], "big")
        if not (0xE0 <= marker <= 0xEF or marker == 0xFE):
            digest.update(read.at(pos, 2 + length))  # tables, frame header: small
        pos += 2 + length
    return False


def _png_data_key(read: _Reader, digest: Any) -> bool:
    pos, size = 8, read.size
    while pos + 12 <= size:
        header = read.at(pos, 8)
        length, kind = int.from_bytes(header[:4], "big"), header[4:8]
        if kind not in _PNG_METADATA_CHUNKS:
            # The CRC covers the chunk's data: type + length + CRC identify it without reading it.
            digest.update(header + read.at(pos + 8 + length, 4))
        pos += 12 + length
        if kind == b"IEND":
            return True
    return False


def _webp_data_key(read: _Reader, digest: Any) -> bool:
    pos, size, found = 12, read.size, False
    while pos + 8 <= size:
        header = read.at(pos, 8)
        kind, length = header[:4], int.from_bytes(header[4:8], "little")
        if kind not in _WEBP_METADATA_CHUNKS:
            start = pos + 8
            digest.update(header + read.at(start, min(length, CHUNK)))
            digest.update(read.at(max(start, start + length - CHUNK), min(length, CHUNK)))
            found = True
        pos += 8 + length + (length & 1)
    return found


def image_data_key(path: Path | str, size: int | None = None, head: bytes | None = None) -> str | None:
    """A key of the image data alone — the same before and after metadata is written.

    JPEG (segments other than APPn/COM, the scan data's length, head and tail), PNG
    (critical and pixel chunks by type, length and CRC) and WebP (bitstream chunks):
    a few small reads, like the fingerprint.  Rewriting XMP/IPTC/EXIF (CaptionDesk's
    write-metadata, Lightroom, exiftool) keeps the key, so a photo lands in the same
    train/validation split in every library, whenever it was first seen.  None for
    other formats (TIFF keeps its metadata amid the image data): the caller falls back
    to the fingerprint.  *head* is the file's first bytes if already read.
    """
    with open_regular(path, "rb", buffering=0) as handle:
        fd = handle.fileno()
        if size is None:
            size = os.fstat(fd).st_size
        if head is None:
            head = os.pread(fd, CHUNK, 0)
        read = _Reader(fd, head, size)
        digest = hashlib.blake2b(b"cd-image-data", digest_size=16)
        if head.startswith(b"\xff\xd8"):
            ok = _jpeg_data_key(read, digest)
        elif head.startswith(b"\x89PNG\r\n\x1a\n"):
            ok = _png_data_key(read, digest)
        elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            ok = _webp_data_key(read, digest)
        else:
            ok = False
    return DATA_KEY_PREFIX + digest.hexdigest() if ok else None
def fingerprint_bytes(data: bytes) -> str:
    """The fingerprint :func:`fingerprint_file` gives a file holding exactly *data*.

    For images embedded in a dataset (parquet): no temporary file, nothing written.
    """
    size = len(data)
    digest = hashlib.blake2b(_VERSION + size.to_bytes(8, "little"), digest_size=16)
    if size <= 2 * CHUNK:
        digest.update(data)
    else:
        digest.update(data[:CHUNK])
        digest.update(data[-CHUNK:])
    return digest.hexdigest()
