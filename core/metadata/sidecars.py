"""XMP sidecars: how they are named (``SIDECAR_NAMINGS``), found and read.

``full`` = ``photo.jpg.xmp`` (digiKam, darktable), ``stem`` = ``photo.xmp`` (Lightroom,
Capture One, exiftool), and the default ``auto`` (``DEFAULT_SIDECAR_NAMING``): ``stem`` for
camera RAW files, ``full`` for everything else, since Lightroom reads sidecars only of RAW
files while digiKam and darktable look for ``photo.heic.xmp``.  A RAW+JPEG pair
(``IMG_2.CR2`` + ``IMG_2.JPG``) shares a stem, and Lightroom's ``IMG_2.xmp`` belongs to the
RAW: a stem-named sidecar is therefore only used (written or read) for an image no other
file shares the stem with; otherwise the full name is.
"""

from __future__ import annotations

import os
import stat as stat_module
from pathlib import Path
from typing import TYPE_CHECKING

from core.imaging import IMAGE_EXTENSIONS
from core.inputs import regular_file_refusal
from core.metadata.errors import MetadataError

if TYPE_CHECKING:
    pass


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


def validate_sidecar_naming(naming: str) -> str:
    if naming not in SIDECAR_NAMINGS:
        raise ValueError(f"sidecar naming must be one of {', '.join(SIDECAR_NAMINGS)}, not {naming!r}")
    return naming


def shares_stem(path: Path) -> bool:
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
        own_stem = not full_name.exists() and path.with_suffix(SIDECAR_SUFFIX).exists() and not shares_stem(path)
        naming = "stem" if own_stem or path.suffix.lower() in RAW_EXTENSIONS else "full"
    if naming == "full" or full_name.exists() or shares_stem(path):
        return full_name
    return path.with_suffix(SIDECAR_SUFFIX)


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def existing_sidecar(image_path: Path) -> Path | None:
    """*image_path*'s own sidecar: the full-name one, or the stem one if no pair shares it.

    Anything by that name counts (a FIFO too), so the reader can say why it is not read.
    """
    full_name = image_path.with_name(image_path.name + SIDECAR_SUFFIX)
    if full_name.exists():
        return full_name
    stem_name = image_path.with_suffix(SIDECAR_SUFFIX)
    if stem_name.exists() and not shares_stem(image_path):
        return stem_name
    return None


def read_sidecar(sidecar: Path, within: Path | None) -> bytes:
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
