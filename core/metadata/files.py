"""Rewriting a photo safely: atomic replacement, leftovers of killed writes, and the check
that the image data of the old and new file are the same."""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat as stat_module
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


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


def atomic_write(target: Path, data: bytes, mode: int | None = None) -> None:
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
