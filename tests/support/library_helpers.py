"""Libraries with captions, and the CLI, for the dataset tests (export, import, metadata).

A helper module, not a test module: tests/core/datasets/test_export.py, test_import.py and
test_metadata.py import from here rather than from each other.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import select

import captiondesk.cli
from captiondesk import dataset_commands as cli_dataset
from core import captions
from core.library import Library
from core.models import Image
from tests.support.imagegen import write_jpeg

NON_ASCII_CAPTION = "Café – 東京の桜 🌸, \"quoted\" and, commas"


def run_cli(argv: Sequence[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """``captiondesk`` main() with the dataset commands registered (until captiondesk.cli does it)."""
    original = captiondesk.cli.build_parser

    def build_with_dataset_commands() -> argparse.ArgumentParser:
        parser = original()
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if "export" not in subparsers.choices:
            cli_dataset.register(subparsers)
        return parser

    monkeypatch.setattr(captiondesk.cli, "build_parser", build_with_dataset_commands)
    return captiondesk.cli.main(list(argv))


def images_by_path(library: Library) -> dict[str, Image]:
    with library.db.read() as session:
        return {image.rel_path: image for image in session.scalars(select(Image))}


def current_captions(library: Library) -> dict[str, tuple[str, str]]:
    """rel_path → (text, source) of every current caption."""
    result = {}
    with library.db.read() as session:
        for image in session.scalars(select(Image)):
            caption = captions.current_caption(session, image.id)
            if caption is not None:
                result[image.rel_path] = (caption.text, caption.source)
    return result


def write_heic(path: Path, color=(20, 120, 220), size=(40, 30)) -> Path:
    import pillow_heif

    pillow_heif.register_heif_opener()
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.new("RGB", size, color).save(path, quality=90)
    return path


def make_captioned_library(library: Library, photo_dir: Path, count: int = 10) -> dict[str, str]:
    """*count* JPEGs in sub-folders plus a HEIC, captioned (a few by a person).

    Returns rel_path → caption text.
    """
    for i in range(count):
        write_jpeg(photo_dir / f"album{i % 3}" / f"photo{i}.jpg", seed=100 + i)
    write_heic(photo_dir / "phone" / "IMG_0001.HEIC")
    library.scan([library.add_root(photo_dir).id])
    texts: dict[str, str] = {}
    with library.db.write() as session:
        for number, image in enumerate(session.scalars(select(Image).order_by(Image.rel_path))):
            text = f"photo number {number} of {image.rel_path}"
            if number == 1:
                text = NON_ASCII_CAPTION
            if number % 4 == 0:
                captions.set_human_caption(session, image.id, text)
            else:
                captions.add_model_caption(session, image.id, text, model_name="tiny-blip", score=-0.5)
            texts[image.rel_path] = text
    return texts


def make_photo(path: Path, *, seed: int = 0) -> Path:
    """A noisy image (so compression is not trivial) with camera EXIF already in it."""
    rng = np.random.default_rng(seed)
    image = PILImage.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), "RGB")
    exif = PILImage.Exif()
    exif[0x010F] = "TestCam"  # Make
    exif[0x0110] = "Model 1"  # Model
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".jpg":
        image.save(path, "JPEG", quality=90, exif=exif.tobytes())
    elif suffix == ".png":
        image.save(path, "PNG", exif=exif.tobytes())
    elif suffix == ".webp":
        image.save(path, "WEBP", quality=80, exif=exif.tobytes())
    elif suffix == ".tif":
        image.save(path, "TIFF", tiffinfo={0x010F: "TestCam", 0x0110: "Model 1"})
    else:
        raise ValueError(suffix)
    return path
