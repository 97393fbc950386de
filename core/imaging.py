"""Image decoding shared by thumbnails, captioning and training.

:func:`load_rgb` is the one way CaptionDesk turns a file into pixels:

* EXIF orientation applied (a portrait photo is captioned upright);
* every mode becomes correct 8-bit RGB: 16-bit greyscale is scaled (Pillow's own
  ``convert`` saturates it to white), CMYK converted, transparency composited on white,
  animations give their first frame;
* JPEGs wanted at a small size are decoded with ``draft`` (DCT scaling: far less work
  than a full decode; see docs/optimization-notes.md, "JPEG draft decode");
* a decompression bomb, a truncated or corrupt file raises :class:`ImageDecodeError`
  with a message meant for the user — never a half-grey image passed on silently.

:func:`load_model_input` is the one decode of a photo for a captioning model -
captioning, training and evaluation all call it (through
:func:`core.captioning.captioner.load_model_image`), so the pixels a model is scored on are
the pixels it captions.

:func:`probe` reads only the header (size, format) for the scanner.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from core.inputs import regular_file_problem

try:  # HEIC/HEIF support is optional at run time but installed by default.
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - depends on the install
    HEIF_SUPPORTED = False

# Truncated files must fail loudly: a photo captioned from its top half is worse than
# an error the user can see.  (This is Pillow's default; pin it against other code.)
ImageFile.LOAD_TRUNCATED_IMAGES = False

#: Largest image we decode, in pixels: Pillow's own hard limit (~179 MP, e.g. a
#: 16 000 x 11 000 panorama), so header checks and decoding agree.  Pillow only *warns*
#: between half that and this; we silence the warning and stop here with a clear error.
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS

#: File extensions the scanner picks up (lower case, with the dot).
IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".tif", ".tiff", ".bmp",
        ".gif", ".avif", ".heic", ".heif",
    }
)

_TRANSPARENT_BACKGROUND = (255, 255, 255)

#: JPEGs for a model are decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both
#: sides at least this fraction of the model's input size.  The processor resizes to the
#: input size anyway; allowing a slight (< 1/0.85) upscale lets a 4:3 photo use the next
#: smaller scale, which pays off because decode threads compete with torch for the same
#: cores (see docs/optimization-notes.md, "JPEG draft decode").
DRAFT_FRACTION = 0.85
#: Draft size used when the model's input size is unknown.
DEFAULT_DRAFT_SIZE = 448


class ImageDecodeError(Exception):
    """A file could not be decoded; the message is shown to the user for that image."""


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str


def _check_size(path: Path | str, width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image has an invalid size {width}x{height}")
    if width * height > MAX_PIXELS:
        raise ImageDecodeError(
            f"image is too large to decode safely: {width}x{height} "
            f"({width * height / 1e6:.0f} MP, limit {MAX_PIXELS / 1e6:.0f} MP)"
        )


def _open(path: Path | str) -> Image.Image:
    """Open *path* lazily (header only), turning Pillow's errors into ImageDecodeError."""
    try:
        # A FIFO that replaced a photo would block Pillow's open forever.
        if (problem := regular_file_problem(path)) is not None:
            raise ImageDecodeError(problem)
        if os.path.getsize(path) == 0:
            raise ImageDecodeError("file is empty (0 bytes)")
        with warnings.catch_warnings():
            # We enforce our own, larger pixel limit in _check_size.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image, or a format CaptionDesk cannot read") from None
    except Image.DecompressionBombError as exc:
        # Raised by Pillow from the header alone, before any pixel is decoded.
        raise ImageDecodeError(f"image is too large to decode safely ({exc})") from None
    except FileNotFoundError:
        raise ImageDecodeError("file not found") from None
    except PermissionError:
        raise ImageDecodeError("permission denied") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"cannot read image: {exc}") from None
    return im


# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...);
# 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) share the range but are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    pos = 2
    end = len(head)
    while pos + 4 <= end:
        if head[pos] != 0xFF:
            return None  # not at a marker: let Pillow sort it out
        marker = head[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame
            return None
        length = int.from_bytes(head[pos + 2 : pos + 4], "big")
        if marker in _JPEG_SOF:
            if pos + 9 > end:
                return None
            height = int.from_bytes(head[pos + 5 : pos + 7], "big")
            width = int.from_bytes(head[pos + 7 : pos + 9], "big")
            return width, height
        pos += 2 + length
    return None


def probe_head(head: bytes) -> ImageInfo | None:
    """Size and format of a JPEG or PNG from its first bytes; None when unsure.

    Pillow's JPEG header parser is slow in Python next to reading the few bytes this
    needs, which matters when first-scanning 100 000 photos (see
    docs/optimization-notes.md, "Header probe").
    Anything unusual returns None and the caller falls back to :func:`probe`.
    """
    if head.startswith(b"\xff\xd8\xff"):
        size = _jpeg_size(head)
        if size is None:
            return None
        return ImageInfo(size[0], size[1], "JPEG")
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) >= 24:
        return ImageInfo(int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"), "PNG")
    return None


def probe(path: Path | str, head: bytes | None = None) -> ImageInfo:
    """Size and format from the file header, without decoding pixels.

    *head*, the file's first bytes if the caller already has them, allows a fast path
    for JPEG and PNG.
    """
    if head is not None:
        if not head:
            raise ImageDecodeError("file is empty (0 bytes)")
        info = probe_head(head)
        if info is not None:
            _check_size(path, info.width, info.height)
            return info
    im = _open(path)
    try:
        width, height = im.size
        _check_size(path, width, height)
        return ImageInfo(width, height, (im.format or "").upper())
    finally:
        im.close()


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB correctly."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greyscale: Pillow's convert() clips to 0..255 (a white image).  Scale
        # the full 16-bit range down instead.
        import numpy as np

        data = np.asarray(im.convert("I"), dtype=np.int64)
        data = np.clip(data, 0, 65535) >> 8
        return Image.fromarray(data.astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        import numpy as np

        data = np.asarray(im, dtype=np.float64)
        top = float(data.max()) if data.size else 0.0
        scale = 255.0 / top if top > 1.0 else 255.0
        data = np.clip(data * scale, 0, 255)
        return Image.fromarray(data.astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _TRANSPARENT_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def load_rgb(
    path: Path | str, max_size: int | None = None, *, draft_size: int | None = None
) -> Image.Image:
    """Decode *path* to an upright 8-bit RGB image.

    With *max_size*, the result fits in a ``max_size`` x ``max_size`` box (aspect kept),
    and JPEGs are decoded at a reduced DCT scale no smaller than that box.
    With *draft_size* only the reduced-scale JPEG decode is done (both sides stay at
    least that big, no resize): what a model's own processor should resize from.
    Raises :class:`ImageDecodeError` with a user-facing message on any failure.
    """
    im = _open(path)
    try:
        _check_size(path, *im.size)
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)
        draft_to = max_size or draft_size
        if draft_to is not None and im.format == "JPEG":
            # draft() keeps the decoded image at least this big; orientation may swap
            # the axes afterwards, which a square box does not care about.
            im.draft("RGB", (draft_to, draft_to))
        try:
            im.load()
        except (OSError, SyntaxError, ValueError) as exc:
            message = str(exc)
            if "truncated" in message.lower() or "premature" in message.lower():
                raise ImageDecodeError(f"file is truncated or corrupt ({message})") from None
            raise ImageDecodeError(f"cannot decode image data: {message}") from None
        except Image.DecompressionBombError as exc:
            raise ImageDecodeError(f"image is too large to decode safely: {exc}") from None
        try:
            oriented = ImageOps.exif_transpose(im)
        except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the pixels
            oriented = im
        rgb = _to_rgb(oriented)
        if max_size is not None and max(rgb.size) > max_size:
            rgb.thumbnail((max_size, max_size), Image.Resampling.BICUBIC)
        if rgb is im:
            # Detach from the file handle so the caller owns a plain in-memory image.
            rgb = rgb.copy()
        return rgb
    finally:
        im.close()


def model_draft_size(input_side: int | None) -> int:
    """The JPEG draft size for a model whose input is *input_side* pixels (None: unknown)."""
    if not input_side:
        return DEFAULT_DRAFT_SIZE
    return max(64, int(input_side * DRAFT_FRACTION))


def load_model_input(path: Path | str, input_side: int | None) -> Image.Image:
    """Decode *path* for a model whose input is *input_side* pixels: THE model-input decode.

    Captioning, training and evaluation all decode through this function, so a model is
    trained and scored on exactly the pixels it captions (they used to differ: 448 px
    drafts for training/evaluation, 0.85 x the input size for captioning).
    """
    return load_rgb(path, draft_size=model_draft_size(input_side))


def thumbnail_path(cache_dir: Path, fingerprint: str, size: int) -> Path:
    """Where the thumbnail of the image with *fingerprint* at *size* px is cached."""
    return cache_dir / "thumbnails" / str(size) / fingerprint[:2] / f"{fingerprint}.jpg"


def ensure_thumbnail(path: Path | str, fingerprint: str, cache_dir: Path, size: int = 256) -> Path:
    """Return the cached thumbnail for *path*, making it first if needed.

    Thumbnails are keyed by content fingerprint: a moved file keeps its thumbnail and
    an edited one gets a new one.  Written to a temporary name then renamed, so a
    crash never leaves a half-written JPEG in the cache.
    """
    target = thumbnail_path(cache_dir, fingerprint, size)
    if target.exists():
        return target
    image = load_rgb(path, max_size=size)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    image.save(tmp, "JPEG", quality=85, optimize=False)
    os.replace(tmp, target)
    return target
