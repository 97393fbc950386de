"""Fakes and sample libraries for the GUI tests and ``benchmarks/gui_responsiveness.py``.

A helper module, not a test module (no ``test_`` prefix): pytest does not collect it, and
importing it from tests or benchmarks runs no tests.

* :class:`FakeCaptioner` follows the ``core.captioning`` Captioner interface and writes
  "a photo WxH" with score -0.5 (optionally sleeping per batch to simulate work).
* :class:`FakeEngine` is what :class:`desktop_app.model_thread.CaptionService` takes as its
  engine: the real ``core.captioning.engine`` (spec, job runner: decoding, batching,
  commits, cancel) with a ``load_captioner`` that returns the fake captioner, so no
  model is ever loaded.
* :func:`build_library` makes a small library of real JPEGs with a mix of caption
  states, for tests and the screenshot.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from core.captioning import CaptionResult
from core.captioning.engine import CaptionJobSpec, run_caption_job
from core.captioning.job_spec import GenerationSettings
from core.captioning.registry import resolve_model
from core.captions import add_model_caption, set_human_caption
from core.library import Library
from tests.support.imagegen import write_jpeg


class FakeCaptioner:
    """Captioner stand-in: "a photo WxH", score -0.5; ``delay`` seconds per batch."""

    def __init__(self, delay: float = 0.0) -> None:
        self.identity = {"family": "fake", "model": "fake"}
        self.device = "cpu"
        self.delay = delay
        self.closed = False
        self.batches = 0

    def preprocess(self, images: list[Any], settings: Any) -> list[Any]:
        return images

    def generate(self, batch: list[Any], settings: Any) -> list[CaptionResult]:
        if self.delay:
            time.sleep(self.delay)
        self.batches += 1
        return [CaptionResult(f"a photo {im.width}x{im.height}", -0.5) for im in batch]

    def caption(self, images: list[Any], settings: Any) -> list[CaptionResult]:
        return self.generate(self.preprocess(images, settings), settings)

    def close(self) -> None:
        self.closed = True


class FakeEngine:
    """The engine seam of :class:`desktop_app.model_thread.CaptionService`, with a fake model."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.loaded: list[tuple[str, str | None, str]] = []
        self.captioners: list[FakeCaptioner] = []
        self.GenerationSettings = GenerationSettings
        self.CaptionJobSpec = CaptionJobSpec
        self.run_caption_job = run_caption_job
        self.resolve_model = resolve_model

    def load_captioner(self, model: str, adapter: str | None = None, device: str = "auto", **_kw: Any) -> FakeCaptioner:
        self.loaded.append((model, adapter, device))
        captioner = FakeCaptioner(self.delay)
        self.captioners.append(captioner)
        return captioner


# -- sample libraries --------------------------------------------------------------------

SAMPLE_CAPTIONS = [
    "a red barn in a snowy field",
    "two dogs playing on the beach at sunset",
    "a bowl of ramen with chopsticks",
    "a city street at night with neon signs",
    "a mountain lake reflecting pine trees",
    "a child flying a kite in a park",
    "a close-up of a sunflower",
    "a cat sleeping on a windowsill",
    "an old bicycle leaning against a brick wall",
    "a plate of pancakes with berries",
    "fog over a bridge in the morning",
    "a crowded market with fruit stalls",
]


def build_library(
    library: Library,
    folder: Path,
    *,
    count: int = 24,
    model_every: int = 2,
    human_every: int = 5,
    bad_files: int = 1,
    big: bool = False,
) -> dict[str, Any]:
    """*count* JPEGs in two sub-folders, scanned; captions on a mix of them.

    Image ``k`` (by name order) gets a model caption when ``k % model_every == 0``
    (score falling with ``k``), and a human caption on top when ``k % human_every == 0``.
    ``bad_files`` broken files are added to show the error state.
    """
    colors = [(200, 40, 40), (40, 160, 60), (40, 80, 200), (220, 180, 40), (120, 60, 160), (30, 160, 170)]
    size = (480, 360) if big else (64, 48)
    for k in range(count):
        sub = "beach" if k % 2 else "city"
        write_jpeg(folder / sub / f"img_{k:03d}.jpg", colors[k % len(colors)], size, seed=k)
    for b in range(bad_files):
        (folder / "city" / f"broken_{b}.jpg").write_bytes(b"not a jpeg at all")
    root = library.add_root(folder)
    library.scan([root.id])
    from sqlalchemy import select

    from core.models import Image

    with library.db.read() as session:
        images = session.execute(
            select(Image.id, Image.rel_path).where(Image.state == "ok").order_by(Image.rel_path)
        ).all()
    ids = [image_id for image_id, _rel in images]
    with library.db.write() as session:
        for k, image_id in enumerate(ids):
            if model_every and k % model_every == 0:
                add_model_caption(
                    session,
                    image_id,
                    SAMPLE_CAPTIONS[k % len(SAMPLE_CAPTIONS)],
                    model_name="Salesforce/blip-image-captioning-base",
                    provenance={"generation": {"num_beams": 1, "max_new_tokens": 30}},
                    score=-0.1 - 0.05 * k,
                )
            if human_every and k % human_every == 0:
                set_human_caption(session, image_id, SAMPLE_CAPTIONS[(k + 3) % len(SAMPLE_CAPTIONS)])
    return {"root_id": root.id, "ids": ids}
