"""Duplicate photos: perceptual hashes, groups, "keep one", and splits no group crosses."""

from __future__ import annotations

import itertools
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageEnhance
from sqlalchemy import select

from core.captions import set_human_caption
from core.datasets.selection import count_export_split
from core.duplicates import (
    DuplicatesError,
    clear_marks,
    count_leaks,
    duplicate_groups,
    find_duplicates,
    keep_one,
    keep_one_by_rule,
)
from core.library import Library
from core.models import Image, ImageHash
from core.perceptual_hash import (
    MAX_COLOUR_DIFFERENCE,
    MAX_DISTANCE,
    close_pairs,
    colour_difference,
    distance,
    hashes_of_file,
    hashes_of_image,
    near_duplicate_groups,
)
from core.splits import TEST, TRAIN, VALIDATION
from core.training import collect_training_data
from tests.support.imagegen import COPY_KINDS, photo_image, write_copies, write_jpeg

ORIGINALS = 40
LONERS = 60


def _ids_by_name(library: Library) -> dict[str, int]:
    with library.db.read() as session:
        return {Path(rel).stem: i for i, rel in session.execute(select(Image.id, Image.rel_path))}


@pytest.fixture(scope="module")
def copies_library(tmp_path_factory: pytest.TempPathFactory):
    """40 photos with their 5 kinds of copies (in another folder, as an export would hold
    them) and 60 photos without any copy; duplicates found once."""
    root = tmp_path_factory.mktemp("dups")
    photos = root / "photos"
    for n in range(ORIGINALS):
        original = photo_image(n)
        (photos / "camera").mkdir(parents=True, exist_ok=True)
        original.save(photos / "camera" / f"p{n:02}.jpg", quality=92)
        write_copies(original, photos / "exported", f"p{n:02}")
    for n in range(LONERS):
        photo_image(1000 + n).save(photos / "camera" / f"solo{n:02}.jpg", quality=92)
    library = Library(root / "library.db")
    library.scan([library.add_root(photos).id])
    stats = find_duplicates(library)
    yield library, stats
    library.close()


def test_hashes_are_imagehash_bit_for_bit() -> None:
    import imagehash  # the test extra's reference implementation
    for seed in range(12):
        image = photo_image(seed)
        phash, dhash, _colour = hashes_of_image(image)
        assert phash & (2**64 - 1) == int(str(imagehash.phash(image)), 16)
        assert dhash & (2**64 - 1) == int(str(imagehash.dhash(image)), 16)


def test_copies_are_grouped_with_their_original_and_distinct_photos_never_are(copies_library) -> None:
    library, stats = copies_library
    ids = _ids_by_name(library)
    group_of = {m.image_id: g.group_id for g in duplicate_groups(library) for m in g.members}
    found = sum(
        group_of.get(ids[f"p{n:02}_{kind}"]) is not None and group_of.get(ids[f"p{n:02}_{kind}"]) == group_of.get(ids[f"p{n:02}"])
        for n in range(ORIGINALS) for kind in COPY_KINDS
    )
    assert found / (ORIGINALS * len(COPY_KINDS)) >= 0.95
    # No group holds two different photos: every member descends from one original.
    for group in duplicate_groups(library):
        assert len({m.path.stem.split("_")[0] for m in group.members}) == 1, [m.rel_path for m in group.members]
    assert not any(ids[f"solo{n:02}"] in group_of for n in range(LONERS))
    assert stats.hashed == ORIGINALS * (1 + len(COPY_KINDS)) + LONERS and stats.errors == 0
    assert stats.groups == len(duplicate_groups(library))


def test_the_threshold_separates_copies_from_distinct_photos(copies_library) -> None:
    """The distances behind MAX_DISTANCE: every copy within it, every pair of distinct photos well beyond."""
    library, _ = copies_library
    ids = _ids_by_name(library)
    with library.db.read() as session:
        hashes = {i: h for i, *h in session.execute(
            select(ImageHash.image_id, ImageHash.phash, ImageHash.dhash, ImageHash.colour))}
    pairs = [(hashes[ids[f"p{n:02}"]], hashes[ids[f"p{n:02}_{k}"]]) for n in range(ORIGINALS) for k in COPY_KINDS]
    assert max(distance(a, b) for a, b in pairs) <= MAX_DISTANCE
    assert max(colour_difference(a[2], b[2]) for a, b in pairs) <= MAX_COLOUR_DIFFERENCE
    originals = [hashes[ids[f"p{n:02}"]] for n in range(ORIGINALS)] + [hashes[ids[f"solo{n:02}"]] for n in range(LONERS)]
    assert min(distance(a, b) for a, b in itertools.combinations(originals, 2)) > MAX_DISTANCE


def test_one_layout_in_other_colours_is_not_a_duplicate(tmp_path: Path) -> None:
    """Grey-level hashes cannot tell a red picture from a green one of the same layout; the colour signature can."""
    colours = [(200, 40, 40), (40, 160, 60), (40, 80, 200), (220, 180, 40), (120, 60, 160), (30, 160, 170)]
    files = [write_jpeg(tmp_path / f"flat{k}.jpg", colours[k % 6], (64, 48), seed=k) for k in range(24)]
    hashes = [hashes_of_file(f) for f in files]
    assert sum(distance(a, b) <= MAX_DISTANCE for a, b in itertools.combinations(hashes, 2)) > 20
    assert near_duplicate_groups(hashes) == []
    brighter = tmp_path / "brighter.jpg"
    ImageEnhance.Brightness(PILImage.open(files[0])).enhance(1.15).save(brighter, quality=90)
    assert near_duplicate_groups([*hashes, hashes_of_file(brighter)]) == [[0, 24]]


def test_band_index_finds_exactly_the_pairs_a_full_comparison_finds() -> None:
    rng = np.random.default_rng(7)
    base = rng.integers(-(2**63), 2**63 - 1, (300, 2), dtype=np.int64)
    planted = base[:120].copy()
    for i, flips in enumerate(np.arange(120) % 30):  # 0..29 bits changed: both sides of the threshold
        for bit in rng.choice(128, flips, replace=False):
            planted[i, bit // 64] ^= np.int64(1 << (bit % 64)) if bit % 64 < 63 else np.int64(-(2**63))
    codes = np.concatenate([base, planted])
    hashes = [(int(a), int(b)) for a, b in codes]
    brute = {(a, b) for a, b in itertools.combinations(range(len(hashes)), 2) if distance(hashes[a], hashes[b]) <= MAX_DISTANCE}
    assert {(int(a), int(b)) for a, b in close_pairs(codes)} == brute
    assert len(brute) >= 80  # the planted pairs at 0..23 bits
    with pytest.raises(ValueError):
        close_pairs(codes, MAX_DISTANCE + 1)


def _small_library(tmp_path: Path, originals: int = 3) -> Library:
    photos = tmp_path / "photos"
    for n in range(originals):
        image = photo_image(500 + n)
        (photos / "a").mkdir(parents=True, exist_ok=True)
        image.save(photos / "a" / f"q{n}.jpg", quality=92)
        write_copies(image, photos / "b", f"q{n}")
    library = Library(tmp_path / "library.db")
    library.scan([library.add_root(photos).id])
    return library


def test_keep_one_only_marks_and_leaves_out_of_training_and_export(tmp_path: Path) -> None:
    library = _small_library(tmp_path)
    try:
        with library.db.write() as session:
            for image_id in session.scalars(select(Image.id)):
                set_human_caption(session, image_id, f"photo {image_id}")
        unchecked = collect_training_data(library, val_ratio=0.3)
        assert unchecked.unchecked == 18 and "18 photos were never checked" in unchecked.duplicates_note()
        find_duplicates(library)
        groups = duplicate_groups(library)
        assert len(groups) == 3 and all(len(g.members) == 6 and not g.exact for g in groups)
        before = collect_training_data(library, val_ratio=0.3)
        assert before.unchecked == 0 and before.duplicates_note() is None
        first = groups[0]
        chosen = first.members[2]
        keep_one(library, first.group_id, chosen.image_id)
        decided = duplicate_groups(library)[0]
        assert decided.kept is not None and decided.kept.image_id == chosen.image_id
        assert [m.mark for m in decided.members].count("excluded") == 5
        assert all(m.path.exists() for m in decided.members)  # nothing deleted
        after = collect_training_data(library, val_ratio=0.3)
        examples = {e.image_id for e in after.train + after.validation + after.test}
        assert after.excluded == 5 and len(examples) == 18 - 5 and chosen.image_id in examples
        assert len(before.train + before.validation + before.test) == 18
        assert sum(count_export_split(library.db, val_ratio=0.3).values()) == 13
        with pytest.raises(DuplicatesError):
            keep_one(library, first.group_id, groups[1].members[0].image_id)
        # A rule decides only the undecided groups, never someone's choice.
        assert keep_one_by_rule(library, "largest") == 2
        for group in duplicate_groups(library):
            if group.group_id == first.group_id:
                assert group.kept.image_id == chosen.image_id
            else:  # the most pixels, then the biggest file (the least compressed)
                assert group.kept.image_id == max(group.members, key=lambda m: (m.width * m.height, m.size)).image_id
        assert keep_one_by_rule(library, "oldest") == 0
        clear_marks(library, first.group_id)
        assert not duplicate_groups(library)[0].decided
    finally:
        library.close()


def test_a_changed_picture_is_hashed_again_and_leaves_its_group(tmp_path: Path) -> None:
    library = _small_library(tmp_path, originals=2)
    try:
        assert find_duplicates(library).hashed == 12
        assert find_duplicates(library).hashed == 0  # nothing changed: nothing decoded again
        ids = _ids_by_name(library)
        (q0_group,) = [g for g in duplicate_groups(library) if ids["q0"] in {m.image_id for m in g.members}]
        keep_one(library, q0_group.group_id, ids["q0_resized"])
        path = tmp_path / "photos" / "b" / "q0_resized.jpg"
        photo_image(99).save(path, quality=90)  # another picture at the same path
        library.scan()
        stats = find_duplicates(library)
        assert stats.hashed == 1
        group_of = {m.image_id: g.group_id for g in duplicate_groups(library) for m in g.members}
        assert ids["q0_resized"] not in group_of and group_of[ids["q0"]] == group_of[ids["q0_jpeg_q60"]]
        with library.db.read() as session:  # a photo out of every group loses its mark
            assert session.get(Image, ids["q0_resized"]).duplicate_mark is None
        # An exact copy is a group of its own kind.
        shutil.copy(path, tmp_path / "photos" / "a" / "again.jpg")
        library.scan()
        find_duplicates(library)
        exact = [g for g in duplicate_groups(library) if g.exact]
        assert [sorted(m.path.name for m in g.members) for g in exact] == [["again.jpg", "q0_resized.jpg"]]
    finally:
        library.close()


def test_unreadable_photo_is_reported_and_the_rest_grouped(tmp_path: Path) -> None:
    library = _small_library(tmp_path, originals=1)
    try:
        good = (tmp_path / "photos" / "a" / "q0.jpg").read_bytes()
        (tmp_path / "photos" / "a" / "broken.jpg").write_bytes(good[: len(good) // 2])
        library.scan()
        stats = find_duplicates(library)  # the scan only reads headers: the decode finds it
        assert stats.errors == 1 and stats.hashed == 6 and "broken.jpg" in stats.problems[0]
        assert find_duplicates(library).errors == 0  # not retried until the picture changes
        assert len(duplicate_groups(library)) == 1
    finally:
        library.close()


def test_cancel_keeps_hashes_and_old_groups(tmp_path: Path) -> None:
    library = _small_library(tmp_path, originals=2)
    try:
        cancel = threading.Event()
        cancel.set()
        stats = find_duplicates(library, cancel=cancel)
        assert stats.cancelled and not duplicate_groups(library)
        find_duplicates(library)
        assert len(duplicate_groups(library)) == 2
    finally:
        library.close()


def test_a_confirmer_can_veto_pairs(tmp_path: Path) -> None:
    library = _small_library(tmp_path, originals=1)
    try:
        ids = _ids_by_name(library)
        crop = ids["q0_cropped_5pct"]
        find_duplicates(library, confirm=lambda pairs: [crop not in pair for pair in pairs])
        (group,) = duplicate_groups(library)
        assert crop not in {m.image_id for m in group.members} and len(group.members) == 5
    finally:
        library.close()


def test_no_duplicate_group_crosses_the_split(copies_library) -> None:
    library, _ = copies_library
    with library.db.write() as session:
        for image_id in session.scalars(select(Image.id)):
            set_human_caption(session, image_id, f"photo {image_id}")
    data = collect_training_data(library, val_ratio=0.3, test_ratio=0.2, min_test=5)
    split_of = {e.image_id: e.split for e in data.train + data.validation + data.test}
    assert {VALIDATION, TRAIN} <= set(split_of.values())
    for group in duplicate_groups(library):
        assert len({split_of[m.image_id] for m in group.members}) == 1
    # Export splits the same way: with the same ratios, the same three splits as training.
    counts = count_export_split(library.db, val_ratio=0.3, test_ratio=0.2, min_test=5)
    assert counts == {TRAIN: len(data.train), VALIDATION: len(data.validation), TEST: len(data.test)}
    assert counts[TEST] > 0
    # Without groups, the copies scatter: the leak the groups prevent (and count_leaks counts).
    with library.db.write() as session:
        session.execute(Image.__table__.update().values(duplicate_split_key=None))
    scattered = collect_training_data(library, val_ratio=0.3)
    train_ids = [e.image_id for e in scattered.train]
    leaks = count_leaks(library, [e.image_id for e in scattered.validation], train_ids)
    assert leaks > 0
    assert count_leaks(library, [e.image_id for e in data.validation], [e.image_id for e in data.train]) == 0
    find_duplicates(library)  # puts the group keys back for the other tests


def test_eval_counts_held_out_photos_with_a_near_duplicate_in_training(tmp_path: Path) -> None:
    from core.models import ModelVersion
    from core.training import evaluate_model
    from tests.support.gui_fakes import FakeCaptioner

    library = _small_library(tmp_path, originals=6)
    try:
        with library.db.write() as session:
            for image_id in session.scalars(select(Image.id)):
                set_human_caption(session, image_id, f"photo {image_id}")
        # A version trained before the groups existed: its split scattered the copies.
        scattered = collect_training_data(library, val_ratio=0.3)
        assert scattered.validation and scattered.train
        snapshot = {**scattered.snapshot(), "val_ratio": 0.3}
        with library.db.write() as session:
            session.add(ModelVersion(name="early", base_model="tiny/blip", data_snapshot=snapshot))
        unchecked = evaluate_model(library, "tiny/blip", val_ratio=0.3, captioner=FakeCaptioner())
        assert unchecked.near_duplicates_in_training is None  # no duplicate search yet: not claimed 0
        find_duplicates(library)
        early = evaluate_model(library, "early", val_ratio=0.3, captioner=FakeCaptioner())
        evaluated = {i for i, _, _ in early.predictions} - set(early.train_overlap)
        expected = count_leaks(library, sorted(evaluated), [e.image_id for e in scattered.train])
        assert early.near_duplicates_in_training == expected > 0
        assert any("near-duplicate in training" in w for w in early.warnings)
        # A model scored on today's split, where every group sits on one side, has none.
        fresh = evaluate_model(library, "tiny/blip", val_ratio=0.3, captioner=FakeCaptioner())
        assert fresh.near_duplicates_in_training == 0
    finally:
        library.close()


def test_cli_lists_groups_and_keeps_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from captiondesk import duplicates_command
    from captiondesk.cli import main
    from core import duplicates

    assert duplicates_command.KEEP_RULES == duplicates.KEEP_RULES
    _small_library(tmp_path, originals=2).close()
    lib = str(tmp_path / "library.db")
    assert main(["--library", lib, "duplicates", str(tmp_path / "photos" / "a"), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["counts"]["groups"] == 2 and payload["counts"]["photos in groups"] == 12
    assert [len(g["members"]) for g in payload["groups"]] == [6, 6]
    assert all(m["mark"] is None for g in payload["groups"] for m in g["members"])
    assert main(["--library", lib, "duplicates", "--keep-one", "first"]) == 0
    out = capsys.readouterr().out
    assert "Kept one photo (first) in 2 undecided groups" in out and out.count("  excluded /") == 10 and out.count("  kept     /") == 2
    # Every photo is still on disk.
    assert len(list((tmp_path / "photos").rglob("*.jpg"))) == 12
    assert main(["--library", lib, "duplicates", str(tmp_path / "elsewhere")]) == 2


def test_export_keeps_groups_on_one_side_and_leaves_out_excluded_photos(tmp_path: Path) -> None:
    import csv

    from core.datasets.export_job import export_dataset

    library = _small_library(tmp_path, originals=8)
    try:
        with library.db.write() as session:
            for image_id in session.scalars(select(Image.id)):
                set_human_caption(session, image_id, f"photo {image_id}")
        find_duplicates(library)
        groups = duplicate_groups(library)
        keep_one(library, groups[0].group_id, groups[0].members[0].image_id)
        export_dataset(library, "csv", tmp_path / "out", val_ratio=0.4)
        with open(tmp_path / "out" / "captions.csv", encoding="utf-8", newline="") as handle:
            split_of = {Path(row["library_path"]).name: row["split"] for row in csv.DictReader(handle)}
        assert len(split_of) == 8 * 6 - 5
        assert {m.path.name for m in groups[0].members[1:]}.isdisjoint(split_of)
        sides = [{split_of[m.path.name] for m in g.members if m.path.name in split_of} for g in groups]
        assert all(len(side) == 1 for side in sides) and {"train", "validation"} == set().union(*sides)
    finally:
        library.close()
