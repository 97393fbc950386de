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
