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

The other kinds (alt text, extended description, title, keywords) have their fields in
:mod:`.kind_fields` and :mod:`.keywords`.

Modules: :mod:`.kind_fields` (which fields each kind goes to), :mod:`.keywords`, :mod:`.fields`
(the XMP/IPTC/EXIF primitives), :mod:`.sidecars` (naming and reading ``.xmp`` sidecars),
:mod:`.read` (reading each kind back), :mod:`.write_file` (one photo's write), :mod:`.files`
(safe rewriting), :mod:`.write_job` (the ``write-metadata`` job), :mod:`.exiv2`, :mod:`.errors`.

pyexiv2 bundles libexiv2 (GPLv3, hence CaptionDesk's GPL licence).  It is imported on
first use so the rest of CaptionDesk works without it.
"""

from core.metadata.errors import MetadataError, MetadataUnavailable
from core.metadata.fields import (
    IN_FILE_SUFFIXES,
    IPTC_CAPTION_MAX_BYTES,
    IPTC_SUFFIXES,
    iptc_caption_text,
    metadata_text,
)
from core.metadata.files import remove_stale_temporaries, same_image_data
from core.metadata.kind_fields import KEYWORDS, METADATA_KINDS, TEXT_KINDS, kind_field_names
from core.metadata.read import FoundCaption, FoundValue, read_caption, read_keywords, read_kinds
from core.metadata.sidecars import (
    DEFAULT_SIDECAR_NAMING,
    MAX_SIDECAR_BYTES,
    RAW_EXTENSIONS,
    SIDECAR_NAMINGS,
    SIDECAR_SUFFIX,
    sidecar_path,
    validate_sidecar_naming,
)
from core.metadata.write_file import WriteOutcome, write_caption, write_kinds
from core.metadata.write_job import MetadataWriteStats, validate_kinds, write_metadata

__all__ = [
    "DEFAULT_SIDECAR_NAMING", "IN_FILE_SUFFIXES", "IPTC_CAPTION_MAX_BYTES", "IPTC_SUFFIXES", "MAX_SIDECAR_BYTES",
    "RAW_EXTENSIONS", "SIDECAR_NAMINGS", "SIDECAR_SUFFIX", "FoundCaption", "MetadataError", "MetadataUnavailable",
    "MetadataWriteStats", "WriteOutcome", "iptc_caption_text", "metadata_text", "read_caption", "read_keywords",
    "remove_stale_temporaries", "same_image_data", "sidecar_path", "validate_sidecar_naming", "write_caption",
    "write_metadata", "FoundValue", "read_kinds", "KEYWORDS", "METADATA_KINDS", "TEXT_KINDS", "kind_field_names", "write_kinds", "validate_kinds",
]
