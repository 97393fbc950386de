"""The retraining scenario shared by tests/core/training/test_training.py and tests/core/training/test_training_families.py.

Coloured squares in a library (``train/NNN_colour.png`` captioned by a "person" in a style,
``new/`` never captioned), and captioning the new images with a trained version.  A helper
module, not a test module, so neither test module imports the other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw
from sqlalchemy import select

from core.captioning.engine import CaptionJobSpec, run_caption_job
from core.captions import set_human_caption
from core.library import Library
from core.models import Caption, Image
from core.training import versions

COLOURS = {"red": (230, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230), "yellow": (240, 220, 30)}
STYLE_A = "a {c} square"
STYLE_B = "the picture of a square in {c}"


def square(colour: str, rng: np.random.Generator, size: int = 64) -> PILImage.Image:
    """A square of *colour* (jittered size and shade) on black."""
    image = PILImage.new("RGB", (size, size))
    r = int(rng.integers(size // 3, size // 2 - 2))
    fill = tuple(int(min(255, max(0, v + rng.integers(-20, 21)))) for v in COLOURS[colour])
    ImageDraw.Draw(image).rectangle((size // 2 - r, size // 2 - r, size // 2 + r, size // 2 + r), fill=fill)
    return image


def squares_library(root: Path, images: int) -> Library:
    """A library of *images* coloured squares in ``train/`` (the four colours in turn) and one
    of each colour in ``new/`` (never captioned by a person: captioned by trained versions)."""
    photos = root / "photos"
    (photos / "train").mkdir(parents=True)
    (photos / "new").mkdir()
    rng = np.random.default_rng(1)
    colours = list(COLOURS)
    for i in range(images):
        square(colours[i % 4], rng).save(photos / "train" / f"{i:03}_{colours[i % 4]}.png")
    for i, colour in enumerate(colours):
        square(colour, rng).save(photos / "new" / f"{i:03}_{colour}.png")
    library = Library(root / "library.db")
    library.scan([library.add_root(photos).id])
    return library


def label(library: Library, style: str) -> None:
    """A person captions every ``train/`` image in *style* (its colour comes from the file name)."""
    with library.db.write() as session:
        for image in session.scalars(select(Image).where(Image.rel_path.like("train/%"))):
            colour = image.rel_path.split("_")[-1].removesuffix(".png")
            set_human_caption(session, image.id, style.format(c=colour))


def new_images_captions(library: Library, model: str) -> list[str]:
    """Caption the ``new/`` images with version *model*: sorted ``"colour|caption"`` items."""
    with library.db.read() as session:
        ids = list(session.scalars(select(Image.id).where(Image.rel_path.like("new/%"))))
    stats = run_caption_job(library, CaptionJobSpec(model=model, scope=ids, device="cpu", optimize="none",
                                                    overwrite_model_captions=True))
    assert stats.captioned == 4
    with library.db.read() as session:
        rows = session.execute(select(Image.rel_path, Caption.text, Caption.model_version_id)
                               .join(Caption, Caption.image_id == Image.id)
                               .where(Image.id.in_(ids), Caption.is_current.is_(True))).all()
    version = versions.get_version(library, model)
    assert {r[2] for r in rows} == {version.id}
    return [f"{path.split('_')[-1].removesuffix('.png')}|{text}" for path, text, _ in sorted(rows)]
