"""Duplicates confirmed by the image-embedding index: stored picture vectors veto or confirm the hashes' pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from core.duplicates import duplicate_groups, find_duplicates
from core.library import Library
from core.models import Image
from core.search.embedders import DEFAULT_IMAGE_MODEL
from core.search.query import SimilarityRangeError, picture_confirmer
from core.search.store import IMAGE_KIND, write_vectors
from tests.support.imagegen import photo_image

AXIS_X, AXIS_Y = np.eye(2, 8, dtype=np.float32)


def _pair_library(tmp_path: Path) -> Library:
    """A photo, its half-size copy (near-duplicates by hash) and an unrelated photo."""
    photos = tmp_path / "photos"
    photos.mkdir()
    original = photo_image(610)
    original.save(photos / "shot.jpg", quality=92)
    original.resize((64, 48)).save(photos / "shot_small.jpg", quality=92)
    photo_image(611).save(photos / "other.jpg", quality=92)
    library = Library(tmp_path / "library.db")
    library.scan([library.add_root(photos).id])
    return library


def _keys(library: Library) -> dict[str, tuple[int, str]]:
    """name -> (image id, current content key)."""
    with library.db.read() as session:
        rows = session.execute(select(Image.rel_path, Image.id, func.coalesce(Image.content_key, Image.fingerprint)))
        return {rel: (image_id, key) for rel, image_id, key in rows}


def _store(library: Library, vectors: dict[str, tuple[np.ndarray, str | None]], model: str = DEFAULT_IMAGE_MODEL) -> None:
    """Write each named photo's picture vector, keyed by its real content key (or a stale one)."""
    keys = _keys(library)
    items = [(keys[name][0], key or keys[name][1]) for name, (_, key) in vectors.items()]
    with library.db.write() as session:
        write_vectors(session, model, IMAGE_KIND, items, np.stack([v for v, _ in vectors.values()]))


def _grouped(library: Library) -> list[list[str]]:
    return [sorted(m.rel_path for m in g.members) for g in duplicate_groups(library)]


def test_pictures_that_disagree_veto_the_pair_and_agreeing_ones_group_it(tmp_path: Path) -> None:
    library = _pair_library(tmp_path)
    try:
        _store(library, {"shot.jpg": (AXIS_X, None), "shot_small.jpg": (AXIS_Y, None)})
        stats = find_duplicates(library)
        assert _grouped(library) == [] and stats.rejected == 1 and stats.confirmed
        assert "1 pair the image index rejected" in stats.summary()
        _store(library, {"shot_small.jpg": ((AXIS_X + 0.2 * AXIS_Y) / np.hypot(1, 0.2), None)})  # cosine 0.98
        stats = find_duplicates(library)
        assert _grouped(library) == [["shot.jpg", "shot_small.jpg"]] and stats.rejected == 0 and stats.confirmed
        assert find_duplicates(library, min_similarity=0.99).rejected == 1 and _grouped(library) == []
        with pytest.raises(SimilarityRangeError):
            picture_confirmer(library, min_similarity=1.5)
    finally:
        library.close()


def test_stale_or_absent_vectors_leave_the_pair_to_the_hashes(tmp_path: Path) -> None:
    library = _pair_library(tmp_path)
    try:
        stats = find_duplicates(library)  # no vectors at all: today's behaviour
        assert _grouped(library) == [["shot.jpg", "shot_small.jpg"]] and not stats.confirmed
        assert "rejected" not in stats.summary() and picture_confirmer(library) is None
        _store(library, {"shot.jpg": (AXIS_X, None), "shot_small.jpg": (AXIS_Y, None)}, model="another/clip")
        assert picture_confirmer(library) is None  # another model's vectors are not the default's
        # The copy's vector was made from an older picture: it no longer describes the photo.
        _store(library, {"shot.jpg": (AXIS_X, None), "shot_small.jpg": (AXIS_Y, "an-older-content-key")})
        stats = find_duplicates(library)
        assert _grouped(library) == [["shot.jpg", "shot_small.jpg"]] and stats.confirmed and stats.rejected == 0
    finally:
        library.close()


def test_cli_counts_the_rejected_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from captiondesk import duplicates_command
    from captiondesk.cli import main
    from core.search import query

    assert duplicates_command.MIN_SIMILARITY == query.MIN_PICTURE_SIMILARITY
    library = _pair_library(tmp_path)
    _store(library, {"shot.jpg": (AXIS_X, None), "shot_small.jpg": (AXIS_Y, None)})
    library.close()
    lib = str(tmp_path / "library.db")
    assert main(["--library", lib, "duplicates", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["counts"]["rejected pairs"] == 1 and payload["groups"] == []
    assert payload["image_index"] == {"checked": True, "min_similarity": 0.9}
    assert main(["--library", lib, "duplicates", "--min-similarity", "-1"]) == 0
    out = capsys.readouterr().out
    assert "Group " in out and "0 pairs the image index rejected" in out
