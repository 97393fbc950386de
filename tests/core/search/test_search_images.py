"""Search by image content (a tiny random CLIPModel built from a config), and the CLI's index/search."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import select, update

from core import captions
from core.library import Library
from core.models import Image
from core.search.embedders import ImageEmbedder
from core.search.index_job import update_index
from core.search.query import NotIndexedError, search, similar
from tests.support.library_helpers import run_cli
from tests.support.search_helpers import build_tiny_clip, picture


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip"))


@pytest.fixture
def picture_library(library: Library, photo_dir: Path, tiny_clip: str) -> Library:
    """Four uncaptioned photos: two reds (one a copy), a striped red, a blue; one captioned."""
    picture(photo_dir / "red.jpg", (200, 20, 20))
    picture(photo_dir / "red copy.jpg", (200, 20, 20))
    picture(photo_dir / "stripes.jpg", (200, 20, 20), stripes=True)
    picture(photo_dir / "sub" / "blue.jpg", (20, 20, 200))
    (photo_dir / "broken.jpg").write_bytes(b"not a jpeg at all")
    library.scan([library.add_root(photo_dir).id])
    return library


def _ids(library: Library) -> dict[str, int]:
    with library.db.read() as session:
        return {r: i for i, r in session.execute(select(Image.id, Image.rel_path))}


def test_the_tiny_clip_loads_like_a_hub_folder_and_gives_unit_vectors(tiny_clip: str) -> None:
    model = ImageEmbedder(tiny_clip)
    pictures = [PILImage.new("RGB", (40, 30), (255, 0, 0)), PILImage.new("RGB", (30, 40), (0, 0, 255))]
    images, texts = model.encode_images(pictures), model.encode_texts(["red", "a blue square"])
    assert images.shape == texts.shape == (2, 16)
    assert np.allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    assert not np.allclose(images[0], images[1])


def test_pictures_are_indexed_uncaptioned_and_found_by_text_and_by_likeness(
        picture_library: Library, tiny_clip: str) -> None:
    ids = _ids(picture_library)
    stats = update_index(picture_library, "image", tiny_clip)
    assert (stats.embedded, stats.errors) == (4, 0)  # the broken file is an error at scan time, not here
    assert update_index(picture_library, "image", tiny_clip).embedded == 0
    hits = similar(picture_library, ids["red.jpg"], model=tiny_clip, limit=None)
    assert hits[0].image_id == ids["red copy.jpg"] and hits[0].score == pytest.approx(1, abs=1e-5)
    assert ids["red.jpg"] not in [h.image_id for h in hits]
    found = search(picture_library, "red", by="image", model=tiny_clip, limit=None)
    assert sorted(h.image_id for h in found) == sorted(v for k, v in ids.items() if k != "broken.jpg")
    assert all(a.score >= b.score for a, b in itertools.pairwise(found))


def test_a_changed_picture_is_dropped_until_reindexed(picture_library: Library, photo_dir: Path,
                                                      tiny_clip: str) -> None:
    ids = _ids(picture_library)
    update_index(picture_library, "image", tiny_clip)
    with picture_library.db.write() as session:  # what a scan records when the picture changed in place
        session.execute(update(Image).where(Image.id == ids["red copy.jpg"]).values(content_key="f" * 40))
    assert ids["red copy.jpg"] not in [h.image_id for h in similar(picture_library, ids["red.jpg"],
                                                                    model=tiny_clip, limit=None)]
    assert update_index(picture_library, "image", tiny_clip).embedded == 1


def test_similar_to_an_unindexed_photo_is_a_clear_error(picture_library: Library, tiny_clip: str) -> None:
    with pytest.raises(NotIndexedError, match="index --by image"):
        similar(picture_library, _ids(picture_library)["red.jpg"], model=tiny_clip)


def test_cli_search_by_image_and_like(picture_library: Library, photo_dir: Path, tiny_clip: str,
                                      monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    lib = str(picture_library.path)
    assert run_cli(["--library", lib, "index", "--by", "image", "--model", tiny_clip, "--json"], monkeypatch) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["embedded"] == 4
    code = run_cli(["--library", lib, "search", "--like", str(photo_dir / "red.jpg"), "--model", tiny_clip,
                    "--folder", str(photo_dir), "--json"], monkeypatch)
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["by"] == "image"
    assert out["results"][0]["path"] == str(photo_dir / "red copy.jpg")
    assert [r["rank"] for r in out["results"]] == [1, 2, 3]
    code = run_cli(["--library", lib, "search", "red", "--by", "image", "--model", tiny_clip,
                    "--folder", str(photo_dir / "sub")], monkeypatch)
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and len(lines) == 1 and lines[0].split()[0] == "1" and lines[0].endswith("blue.jpg")


def test_cli_search_by_text_updates_the_index_first(library: Library, photo_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    picture(photo_dir / "a.jpg", (1, 2, 3))
    picture(photo_dir / "b.jpg", (3, 2, 1))
    library.scan([library.add_root(photo_dir).id])
    ids = _ids(library)
    with library.db.write() as session:
        captions.add_model_caption(session, ids["a.jpg"], "a puppy running along the beach", model_name="m")
        captions.set_human_caption(session, ids["b.jpg"], "a bowl of ramen with a boiled egg")
    code = run_cli(["--library", str(library.path), "search", "dog on the sand", "--json"], monkeypatch)
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and [r["image_id"] for r in out["results"]] == [ids["a.jpg"], ids["b.jpg"]]
    assert out["results"][0]["caption"] == "a puppy running along the beach"
    assert out["results"][0]["score"] > out["results"][1]["score"]
    code = run_cli(["--library", str(library.path), "search", "dog", "--state", "verified", "--json"], monkeypatch)
    assert [r["image_id"] for r in json.loads(capsys.readouterr().out)["results"]] == [ids["b.jpg"]]
    assert run_cli(["--library", str(library.path), "search"], monkeypatch) != 0
    assert "give a QUERY" in capsys.readouterr().err
