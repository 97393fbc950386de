"""Generate test images on disk: good photos and a corpus of awkward or broken files."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def write_jpeg(path: Path, color=(200, 40, 40), size=(64, 48), *, seed: int = 0, **save_kw) -> Path:
    """A small JPEG whose content depends on *seed* (so fingerprints differ)."""
    rng = np.random.default_rng(seed)
    data = np.empty((size[1], size[0], 3), dtype=np.uint8)
    data[:] = color
    data[: size[1] // 2, : size[0] // 2] = rng.integers(0, 255, 3, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data, "RGB").save(path, "JPEG", quality=90, **save_kw)
    return path


def bomb_png(path: Path, width: int = 20_000, height: int = 20_000) -> Path:
    """A tiny PNG whose header claims width x height 1-bit pixels (400 MP by default)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(64)) + compressor.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def make_corpus(folder: Path) -> dict[str, Path]:
    """The awkward files every decoder must survive, keyed by what is odd about them."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    files["zero_byte"] = folder / "zero.jpg"
    files["zero_byte"].write_bytes(b"")

    files["text_as_jpg"] = folder / "notes.jpg"
    files["text_as_jpg"].write_text("this is not a photo\n")

    full = io.BytesIO()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(full, "JPEG", quality=95)
    files["truncated_jpeg"] = folder / "truncated.jpg"
    files["truncated_jpeg"].write_bytes(full.getvalue()[: len(full.getvalue()) // 2])

    files["bomb"] = bomb_png(folder / "bomb.png")

    gradient = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    files["png16"] = folder / "deep.png"
    Image.fromarray(gradient).save(files["png16"])

    files["cmyk_jpeg"] = folder / "cmyk.jpg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(files["cmyk_jpeg"], "JPEG", quality=95)

    palette = Image.new("P", (32, 32), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    palette.paste(1, (0, 0, 16, 32))
    files["palette_transparent"] = folder / "palette.png"
    palette.save(files["palette_transparent"], transparency=0)

    frames = [Image.new("RGB", (24, 24), c) for c in ((0, 0, 255), (0, 255, 0), (255, 0, 0))]
    files["animated_gif"] = folder / "anim.gif"
    frames[0].save(files["animated_gif"], save_all=True, append_images=frames[1:], duration=100, loop=0)

    # 40 wide x 20 high as stored, EXIF orientation 6 (rotate 90° clockwise to view):
    # the upright image is 20 wide x 40 high.
    wide = Image.new("RGB", (40, 20), (0, 128, 255))
    exif = Image.Exif()
    exif[0x0112] = 6
    files["exif_rotated"] = folder / "rotated.jpg"
    wide.save(files["exif_rotated"], "JPEG", exif=exif.tobytes())

    files["non_ascii_name"] = write_jpeg(folder / "Café – 東京 🌸.jpg", (10, 200, 10), seed=3)
    return files


def photo_image(seed: int, size: tuple[int, int] = (128, 96)) -> Image.Image:
    """A photo-like RGB picture (sky-to-ground gradient, horizon, blurred shapes, sensor
    noise); different seeds give different scenes, as different as two holiday snaps."""
    from PIL import ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    w, h = size
    y = np.linspace(0, 1, h)[:, None, None]
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    im = Image.fromarray(((top * (1 - y) + bottom * y) * np.ones((1, w, 1))).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    horizon = int(h * rng.uniform(0.4, 0.8))
    ground = [(0, horizon)] + [(x, horizon + int(rng.normal(0, h * 0.05))) for x in range(0, w + 20, 20)]
    draw.polygon(ground + [(w, h), (0, h)], fill=tuple(rng.integers(0, 256, 3).tolist()))
    for _ in range(int(rng.integers(3, 8))):
        x0, y0, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(h // 10, h // 3))
        color = tuple(rng.integers(0, 256, 3).tolist())
        shape = int(rng.integers(0, 3))
        box = [x0 - r, y0 - r, x0 + r, y0 + int(r * rng.uniform(0.5, 1.5))]
        if shape == 0:
            draw.ellipse(box, fill=color)
        elif shape == 1:
            draw.rectangle(box, fill=color)
        else:
            draw.polygon([(x0, y0 - r), (x0 - r, y0 + r), (x0 + r, y0 + r)], fill=color)
    noisy = np.asarray(im.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float64) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


#: The copies :func:`write_copies` makes of a photo, as phone libraries and exported datasets hold them.
COPY_KINDS = ("resized", "jpeg_q60", "cropped_5pct", "brighter", "exif_rotated")


def write_copies(original: Image.Image, folder: Path, stem: str) -> dict[str, Path]:
    """Near-duplicates of *original*: half size, re-encoded at JPEG quality 60, 5 % of each
    side's length cropped (split over both edges), brightness +15 %, and stored rotated with
    an EXIF orientation that turns it upright again."""
    from PIL import ImageEnhance

    folder.mkdir(parents=True, exist_ok=True)
    w, h = original.size
    cw, ch = round(w * 0.05), round(h * 0.05)
    rotated_exif = Image.Exif()
    rotated_exif[0x0112] = 6  # rotate 90° clockwise to view
    made = {
        "resized": (original.resize((w // 2, h // 2), Image.Resampling.LANCZOS), {"quality": 90}),
        "jpeg_q60": (original, {"quality": 60}),
        "cropped_5pct": (original.crop((cw // 2, ch // 2, w - (cw - cw // 2), h - (ch - ch // 2))), {"quality": 90}),
        "brighter": (ImageEnhance.Brightness(original).enhance(1.15), {"quality": 90}),
        # Stored as the upright picture turned 90° counter-clockwise; orientation 6 undoes it.
        "exif_rotated": (original.transpose(Image.Transpose.ROTATE_90), {"quality": 90, "exif": rotated_exif.tobytes()}),
    }
    paths = {}
    for kind, (image, options) in made.items():
        paths[kind] = folder / f"{stem}_{kind}.jpg"
        image.save(paths[kind], "JPEG", **options)
    return paths
