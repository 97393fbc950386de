"""A LoRA "restyle" scenario on a pre-trained tiny BLIP (for choosing and testing LoRA defaults).

1. :func:`pretrain_style_a` builds the tiny BLIP (tests/support/tiny_models.py) and fully
   fine-tunes it, outside the library, on shape photos captioned in style A
   (``"a large red circle"``): a *pre-trained* model with peaked output distributions,
   like a real checkpoint.
2. :func:`restyle_library` puts photos of the same classes into a library and has a
   "person" caption every one of them in style B (``"the picture of a large circle in
   red"``): words in another order, plus words the model never wrote.
3. ``core.training.train`` with LoRA must learn style B: held-out exact match is the
   number (the split is the library's own fingerprint split).

Classes: 4 colours x 2 shapes x 2 sizes x 2 backgrounds = 32 distinct captions.  The
default size (480 photos, 25 % held out) mirrors the issue's measurement (360 training
photos, 120 held out).  A helper module, not a test module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw
from sqlalchemy import select

from tests.support import tiny_models

COLOURS = tiny_models.SHAPE_COLOURS
#: Circle vs square is what the tiny model (32 px input, 8 px patches) confuses most; left out.
SHAPES = ("square", "triangle")
SIZES = ("small", "large")
BACKGROUNDS = {"black": (0, 0, 0), "white": (250, 250, 250)}
STYLE_A = "a {size} {colour} {shape} on {bg}"
STYLE_B = "the picture of a {size} {shape} in {colour} on {bg}"
CLASSES = [(c, s, z, b) for c in COLOURS for s in SHAPES for z in SIZES for b in BACKGROUNDS]


def caption(style: str, cls: tuple[str, str, str, str]) -> str:
    colour, shape, size, bg = cls
    return style.format(colour=colour, shape=shape, size=size, bg=bg)


def photo(cls: tuple[str, str, str, str], rng: np.random.Generator, side: int = 64,
          *, hard: bool = False) -> PILImage.Image:
    """One photo of class *cls*; *hard*: a faint, tiny shape whose colour is hard to tell."""
    colour, shape, size, bg = cls
    image = PILImage.new("RGB", (side, side), BACKGROUNDS[bg])
    # Sizes far apart (radius 1/3-0.42 vs 1/6-1/5 of the side): the tiny model sees 32 px.
    r = int(rng.integers(side // 3, int(side * 0.42))) if size == "large" else int(rng.integers(side // 6, side // 5))
    cx, cy = (int(rng.integers(r, side - r)) for _ in range(2))
    base = np.array(COLOURS[colour], dtype=float)
    if hard:  # washed out towards grey: the colour is barely visible
        base = 0.25 * base + 0.75 * np.array([128.0, 128.0, 128.0])
        r = max(2, r // 2)
    fill = tuple(int(min(255, max(0, v + rng.integers(-20, 21)))) for v in base)
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return image


def pretrain_style_a(path: str | Path, *, steps: int = 300, batch_size: int = 32, seed: int = 0,
                     n: int = 960) -> Path:
    """The tiny BLIP fully fine-tuned on style A (as ``tiny_models.train_tiny_blip`` does); ~15-30 s."""
    rng = np.random.default_rng(seed + 100)
    classes = [CLASSES[i % len(CLASSES)] for i in range(n)]
    images = [photo(c, rng) for c in classes]
    return tiny_models.fine_tune_tiny_blip(path, images, [caption(STYLE_A, c) for c in classes], steps=steps,
                                           batch_size=batch_size, seed=seed)


def restyle_library(root: str | Path, *, n: int = 480, seed: int = 1, hard_fraction: float = 0.0,
                    test_n: int = 0) -> Any:
    """A library of *n* photos in ``train/``, all captioned by a "person" in style B, and *test_n*
    uncaptioned ones in ``test/``; ``(library, {rel_path: (style-B caption, hard)})``.

    *hard_fraction* of the photos are "hard" (faint tiny shapes, see :func:`photo`): the
    confidence benchmark needs captions that a trained model still gets wrong.
    """
    from core.captions import set_human_caption
    from core.library import Library
    from core.models import Image

    root = Path(root)
    photos = root / "photos"
    (photos / "train").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth: dict[str, tuple[str, bool]] = {}
    (photos / "test").mkdir(parents=True, exist_ok=True)
    for i in range(n + test_n):
        cls = CLASSES[i % len(CLASSES)]
        hard = bool(rng.random() < hard_fraction)
        rel = f"train/{i:04}.png" if i < n else f"test/{i:04}.png"
        photo(cls, rng, hard=hard).save(photos / rel)
        truth[rel] = (caption(STYLE_B, cls), hard)
    library = Library(root / "library.db")
    library.scan([library.add_root(photos).id])
    with library.db.write() as session:
        for image in session.scalars(select(Image).where(Image.rel_path.like("train/%"))):
            set_human_caption(session, image.id, truth[image.rel_path][0])
    return library, truth
