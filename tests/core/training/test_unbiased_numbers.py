"""Numbers that do not flatter a version: the three-way split, bootstrap intervals, the
comparison with the base model and the note on a run that kept its first epoch."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.splits import TEST, TRAIN, VALIDATION, assign_split, assign_split3, validate_test_ratio
from core.training import collect_training_data
from core.training.metrics import (
    caption_metrics,
    compare_to_base,
    comparison_sentence,
    kept_epoch_note,
    metric_intervals,
)
from tests.support.training_scenario import STYLE_A, label, squares_library

REFS = [f"a {c} {s}" for c in ("red", "green", "blue", "yellow", "black") for s in ("square", "circle", "cross")] * 3
#: Two thirds right, the rest one word wrong.
HYPS = [r if i % 3 else r.replace("a ", "the ", 1) for i, r in enumerate(REFS)]


def test_three_way_split_keeps_validation_and_only_moves_training_images() -> None:
    fingerprints = [f"{i:032x}" for i in range(3000)]
    two = [assign_split(fp, 0.2) for fp in fingerprints]
    three = [assign_split3(fp, 0.2, test_ratio=0.1) for fp in fingerprints]
    assert three == [assign_split3(fp, 0.2, test_ratio=0.1) for fp in fingerprints]  # deterministic
    # Validation is exactly the two-way split's; test comes only out of train.
    assert [s == VALIDATION for s in three] == [s == VALIDATION for s in two]
    assert all(old == TRAIN for old, new in zip(two, three, strict=True) if new == TEST)
    assert 0.07 < three.count(TEST) / len(three) < 0.13
    # Nested: a larger test ratio only adds test images.
    wider = {fp for fp in fingerprints if assign_split3(fp, 0.2, test_ratio=0.2) == TEST}
    assert {fp for fp, s in zip(fingerprints, three, strict=True) if s == TEST} < wider
    assert [assign_split3(fp, 0.2, test_ratio=0.1, with_test=False) for fp in fingerprints] == two
    for bad in (-0.1, 1.0, 0.85):
        with pytest.raises(ValueError, match="test ratio"):
            validate_test_ratio(0.2, bad)


def test_training_data_has_a_disjoint_test_split_only_with_enough_photos(tmp_path: Path) -> None:
    library = squares_library(tmp_path, 40)
    try:
        label(library, STYLE_A)
        data = collect_training_data(library, val_ratio=0.2, test_ratio=0.3, min_test=5)
        train, val, test = ({e.image_id for e in part} for part in (data.train, data.validation, data.test))
        assert len(test) >= 5 and not (train & test) and not (val & test) and not (train & val)
        assert len(train | val | test) == 40
        snapshot = data.snapshot()
        assert {row[0] for row in snapshot["test"]} == test and snapshot["test_count"] == len(test)
        assert data.test_note() is None
        # The validation split (which chooses the epoch) is the same with or without a test split.
        two_way = collect_training_data(library, val_ratio=0.2, test_ratio=0.0)
        assert {e.image_id for e in two_way.validation} == val and not two_way.test
        assert {e.image_id for e in two_way.train} == train | test
        # Too few for a test split: none, the candidates stay in training, and it is said plainly.
        small = collect_training_data(library, val_ratio=0.2, test_ratio=0.3, min_test=1000)
        assert not small.test and {e.image_id for e in small.train} == train | test
        assert "no test split" in small.test_note() and "at least 1000" in small.test_note()
        assert "test" not in small.snapshot()
    finally:
        library.close()


def test_intervals_contain_the_estimate_and_are_deterministic() -> None:
    point = caption_metrics(HYPS, REFS)
    intervals = metric_intervals(HYPS, REFS)
    assert intervals == metric_intervals(HYPS, REFS)
    assert set(intervals) == {"bleu4", "cider", "rouge_l", "exact_match", "edit_rate"}
    for key, (low, high) in intervals.items():
        assert low <= point[key] <= high, key
    low, high = intervals["exact_match"]
    assert low < point["exact_match"] < high and high - low < 0.5  # a real spread, not a point
    assert metric_intervals(HYPS, REFS, seed=1) != intervals  # the seed is what makes it repeatable
    assert metric_intervals(REFS, REFS)["exact_match"] == [1.0, 1.0]


def test_comparison_with_the_base_uses_the_noise_of_the_photos() -> None:
    same = compare_to_base(HYPS, HYPS, REFS)
    assert same["difference"] == 0.0 and same["interval"] == [0.0, 0.0] and not same["beats_base"]
    assert "did not beat the base model" in comparison_sentence(same)
    better = compare_to_base(HYPS, REFS, REFS)
    low, high = better["interval"]
    assert better["beats_base"] and 0 < low <= better["difference"] <= high and better["n"] == len(REFS)
    assert "beats the base model" in comparison_sentence(better, "test") and "test photos" in comparison_sentence(
        better, "test")
    # One photo better out of 45 is within the noise.
    one = list(HYPS)
    one[0] = REFS[0]
    slight = compare_to_base(HYPS, one, REFS)
    assert slight["difference"] > 0 and slight["interval"][0] <= 0 and not slight["beats_base"]
    with pytest.raises(ValueError):
        compare_to_base(HYPS[:-1], HYPS, REFS)


def test_kept_epoch_one_note_says_why_and_what_to_try() -> None:
    low = kept_epoch_note(1, 3, 2e-5, beats_base=False)
    assert "kept epoch 1 of 3" in low and "too low" in low and "--lr 0.0002" in low
    assert "too high" in kept_epoch_note(1, 3, 3e-3, beats_base=True)
    assert kept_epoch_note(2, 3, 2e-5, beats_base=False) is None and kept_epoch_note(1, 1, 2e-5, False) is None


def test_export_keeps_the_same_three_way_split_as_training_and_says_when_too_few(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import csv

    from core import splits
    from core.datasets.export_job import export_dataset
    from core.datasets.selection import count_export_split

    library = squares_library(tmp_path, 40)
    try:
        label(library, STYLE_A)
        monkeypatch.setattr(splits, "MIN_TEST", 5)  # one threshold for export and training alike
        data = collect_training_data(library, val_ratio=0.2, test_ratio=0.3)
        assert len(data.test) >= 5
        stats = export_dataset(library, "csv", tmp_path / "three", only="verified", val_ratio=0.2, test_ratio=0.3)
        with open(tmp_path / "three" / "captions.csv", encoding="utf-8", newline="") as handle:
            exported = {Path(row["library_path"]).name: row["split"] for row in csv.DictReader(handle)}
        trained = {Path(e.path).name: name for name, part in (("train", data.train), ("validation", data.validation),
                                                               ("test", data.test)) for e in part}
        assert exported == trained and stats.test == len(data.test) and stats.split_note is None
        assert (tmp_path / "three" / "test").is_dir() and f"test {stats.test})" in stats.summary()
        assert count_export_split(library.db, only="verified", val_ratio=0.2, test_ratio=0.3) == {
            "train": stats.train, "validation": stats.validation, "test": stats.test}
        # Too few photos in the test end: none, they stay in train, and the export says so.
        monkeypatch.setattr(splits, "MIN_TEST", 1000)
        small = export_dataset(library, "csv", tmp_path / "two", only="verified", val_ratio=0.2, test_ratio=0.3)
        assert small.test == 0 and small.train == stats.train + stats.test and not (tmp_path / "two" / "test").exists()
        assert small.split_note == f"no test split: only {stats.test} photos would be in it and at least 1000 are needed"
        assert "test" not in small.counts()
    finally:
        library.close()


def test_select_by_sums_the_named_metrics_and_refuses_unknown_names() -> None:
    from core.training import TrainingConfig
    from core.training.metrics import selection_score

    metrics = {"cider": 2.0, "bleu4": 0.5, "rouge_l": 0.7, "exact_match": 0.25, "edit_rate": 0.4}
    assert selection_score(metrics) == 2.5  # default cider+bleu4
    assert selection_score(metrics, "exact_match + edit-rate") == pytest.approx(0.25 - 0.4)  # lower edit rate wins
    assert TrainingConfig(select_by="ROUGE_L+cider").select_by == "rouge_l+cider"
    for bad in ("cider+meteor", "", "cider+cider"):
        with pytest.raises(ValueError, match="select_by"):
            TrainingConfig(select_by=bad)
    with pytest.raises(ValueError, match="test ratio"):
        TrainingConfig(val_ratio=0.5, test_ratio=0.5)


def test_eval_scores_the_test_split_reports_validation_beside_it_and_names_skipped_metrics(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_blip_dir: Path, metric_model_dirs: dict) -> None:
    from types import SimpleNamespace

    from core import splits
    from core.training import evaluate_model
    from core.training.evaluation import _evaluation_split

    library = squares_library(tmp_path, 40)
    try:
        label(library, STYLE_A)
        monkeypatch.setattr(splits, "MIN_TEST", 5)
        data = collect_training_data(library, val_ratio=0.2, test_ratio=0.3)
        result = evaluate_model(library, str(tiny_blip_dir), val_ratio=0.2, test_ratio=0.3, device="cpu",
                                max_new_tokens=6, bertscore_model=str(metric_model_dirs["roberta"]),
                                clip_model=str(tmp_path / "no-clip-here"))
        assert result.split["scored"] == "test" and result.split["test_ratio"] == 0.3
        assert sorted(i for i, _, _ in result.predictions) == sorted(e.image_id for e in data.test)
        assert result.metrics["n"] == len(data.test) and result.validation_metrics["n"] == len(data.validation)
        assert set(result.validation_intervals) == set(result.intervals)
        assert 0 <= result.metrics["bertscore_f1"] <= 1 and "clipscore" not in result.metrics
        assert any(n.startswith("CLIPScore skipped: cannot load") for n in result.notes)
        # Without enough test photos: the validation split, and a note that says why.
        monkeypatch.setattr(splits, "MIN_TEST", 1000)
        plain = evaluate_model(library, str(tiny_blip_dir), val_ratio=0.2, test_ratio=0.3, device="cpu",
                               max_new_tokens=6, bertscore_model=None, clip_model=None)
        assert plain.split["scored"] == "validation" and plain.validation_metrics is None
        assert plain.metrics["n"] == len(data.validation) and plain.notes[0].startswith("no test split")
    finally:
        library.close()
    # A version is scored on its own stored split: its test ratio, or none if it kept no test split.
    kept = SimpleNamespace(data_snapshot={"val_ratio": 0.2, "seed": 3, "test": [[1, "f"]], "test_ratio": 0.15})
    assert _evaluation_split(kept, None, None, None)["test_ratio"] == 0.15
    none_kept = SimpleNamespace(data_snapshot={"val_ratio": 0.2, "seed": 3})
    assert _evaluation_split(none_kept, None, None, None)["test_ratio"] == 0.0
    assert _evaluation_split(None, None, None, None)["test_ratio"] == splits.DEFAULT_TEST_RATIO


def test_training_scores_bertscore_and_clipscore_on_the_test_split_when_asked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_blip_dir: Path, metric_model_dirs: dict) -> None:
    from core import splits
    from core.training import TrainingConfig, train, versions

    library = squares_library(tmp_path, 40)
    try:
        label(library, STYLE_A)
        monkeypatch.setattr(splits, "MIN_TEST", 5)
        config = TrainingConfig(method="lora", epochs=1, batch_size=8, val_ratio=0.2, test_ratio=0.3, patience=0,
                                max_new_tokens=4, device="cpu", select_by="exact_match+rouge_l",
                                bertscore_model=str(metric_model_dirs["roberta"]), clip_model=str(tmp_path / "none"))
        result = train(library, str(tiny_blip_dir), "scored", config)
        assert result.test_size >= 5 and "bertscore_f1" in result.test_metrics
        assert "bertscore_f1" in result.base_test_metrics and "clipscore" not in result.test_metrics
        assert "bertscore_f1" not in result.metrics  # validation chose the epoch; the test split is scored
        assert any(n.startswith("CLIPScore skipped:") for n in result.notes)
        stored = versions.get_version(library, "scored")
        assert stored.metrics["test"]["trained"]["bertscore_f1"] == result.test_metrics["bertscore_f1"]
        assert stored.config["select_by"] == "exact_match+rouge_l" and stored.data_snapshot["test_ratio"] == 0.3
    finally:
        library.close()
