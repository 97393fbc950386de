"""Training per caption kind: ``train --kind keywords`` learns a keyword task, the version
records its kind, each kind has its own active model, and ``caption --kind keywords``
without ``--model`` captions with the keywords kind's active version.

The tiny BLIP trained on shape captions (a family that continues a text and cannot be
*asked* for keywords; its tokenizer taught ``,``, ``warm`` and ``cool``) learns to *write*
them: coloured squares whose person-verified keywords are the colour, the shape and whether
the colour is warm or cool (``red, square, warm``), a set the model must get exactly right
on held-out photos.  (Telling circles from triangles is beyond this ~190k-parameter model
on 48 photos; the colour, the list form and the derived keyword are what it learns here.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from captiondesk.cli import main
from core.captions import set_human_caption
from core.kinds import parse_keywords
from core.library import Library
from core.models import Caption, Image, ModelVersion
from core.training import TrainingConfig, collect_training_data, versions
from core.training.current import current_model
from core.training.metrics import keyword_set_match, kind_metrics
from tests.support.tiny_models import SHAPE_COLOURS, with_extra_words
from tests.support.training_scenario import square

pytestmark = pytest.mark.slow

WARM = {"red", "yellow"}


def _keywords(colour: str, shape: str) -> str:
    return f"{colour}, {shape}, {'warm' if colour in WARM else 'cool'}"


@pytest.fixture(scope="module")
def keyword_library(tmp_path_factory: pytest.TempPathFactory):
    """48 squares (12 of each colour) with keywords a person verified; 8 more never labelled."""
    root = tmp_path_factory.mktemp("kinds-training")
    photos = root / "photos"
    (photos / "train").mkdir(parents=True)
    (photos / "new").mkdir()
    rng = np.random.default_rng(5)
    colours = list(SHAPE_COLOURS)
    for i in range(48):
        square(colours[i % 4], rng).save(photos / "train" / f"{i:03}_{colours[i % 4]}_square.png")
    for i in range(8):
        square(colours[i % 4], rng).save(photos / "new" / f"{i:03}_{colours[i % 4]}_square.png")
    library = Library(root / "library.db")
    library.scan([library.add_root(photos).id])
    with library.db.write() as session:
        for image in session.scalars(select(Image).where(Image.rel_path.like("train/%"))):
            _, colour, shape = image.rel_path.removesuffix(".png").split("_")
            set_human_caption(session, image.id, _keywords(colour, shape), kind="keywords")
            # A caption of the same photos, which keywords training must not learn from.
            set_human_caption(session, image.id, f"a picture of a {colour} {shape}")
    yield library
    library.close()


def test_the_kind_is_a_training_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keywords = TrainingConfig(kind="keywords")
    assert TrainingConfig.from_dict(keywords.to_dict()) == keywords
    assert "kind" not in TrainingConfig().to_dict()  # a caption run's record is as before kinds
    with pytest.raises(ValueError, match="cannot name a caption kind"):
        TrainingConfig(kind="Key Words")
    Library(tmp_path / "library.db").close()
    lib = ["--library", str(tmp_path / "library.db")]
    assert main([*lib, "train", "--name", "x", "--kind", "Key Words"]) == 2
    assert "cannot name a caption kind" in capsys.readouterr().err
    assert main([*lib, "train", "--restyler", "--base", "x", "--name", "x", "--kind", "keywords"]) == 2
    assert "--kind goes with a captioner" in capsys.readouterr().err
    assert main([*lib, "train", "--name", "x", "--kind", "tags", "--base", "x"]) == 2
    assert "no caption kind 'tags'" in capsys.readouterr().err


def test_models_deactivate_kind_clears_only_that_kinds_version(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    library = Library(tmp_path / "library.db")
    with library.db.write() as session:
        session.add(ModelVersion(name="cap-1", base_model="org/base"))
        session.add(ModelVersion(name="kw-1", base_model="org/base", config={"kind": "keywords"}))
    library.close()
    lib = ["--library", str(tmp_path / "library.db")]
    assert main([*lib, "models", "activate", "cap-1"]) == 0
    assert main([*lib, "models", "activate", "kw-1"]) == 0
    capsys.readouterr()
    assert main([*lib, "models", "deactivate", "--kind", "keywords"]) == 0
    assert "No version is active for keywords" in capsys.readouterr().out
    library = Library(tmp_path / "library.db")
    try:
        assert versions.get_active_version(library, "keywords") is None
        assert versions.get_active_version(library, "caption").name == "cap-1"  # the caption's stays
        assert current_model(library, "keywords").model == "cap-1"  # a kind without one uses the caption's
    finally:
        library.close()
    assert main([*lib, "models", "deactivate", "--kind", "tags"]) == 2
    assert "no caption kind 'tags'" in capsys.readouterr().err
    assert main([*lib, "models", "activate", "cap-1", "--kind", "keywords"]) == 2
    assert main([*lib, "models", "deactivate"]) == 0
    library = Library(tmp_path / "library.db")
    try:
        assert versions.get_active_version(library, "caption") is None
    finally:
        library.close()


def test_keyword_metric_is_an_order_free_set_match() -> None:
    assert keyword_set_match(["circle, red, warm", "red, circle"], ["red, circle, warm", "red, circle, warm"]) == 0.5
    assert "keyword_set_match" in kind_metrics(["a"], ["a"], "keywords")
    assert "keyword_set_match" not in kind_metrics(["a"], ["a"], "caption")


def test_training_data_of_a_kind_is_its_verified_values(keyword_library: Library) -> None:
    data = collect_training_data(keyword_library, val_ratio=0.25, kind="keywords")
    examples = data.train + data.validation + data.test
    assert len(examples) == 48 and data.kind == "keywords" and data.snapshot()["kind"] == "keywords"
    # Stored one a line, learnt as one comma line the keyword parser reads back.
    assert all(len(parse_keywords(e.caption)) == 3 and "\n" not in e.caption for e in examples)
    captions = collect_training_data(keyword_library, val_ratio=0.25)
    assert all(e.caption.startswith("a picture of") for e in captions.train)
    assert "kind" not in captions.snapshot()  # a caption run's snapshot is as before kinds


def test_train_kind_keywords_learns_the_keyword_task(keyword_library: Library, trained_blip_dir: Path,
                                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    library = keyword_library
    lib = ["--library", str(library.path)]
    base = with_extra_words(trained_blip_dir, tmp_path / "keyword-blip", [",", "warm", "cool"])
    code = main([*lib, "train", "--kind", "keywords", "--base", str(base), "--name", "kw-1",
                 "--method", "full", "--lr", "3e-3", "--epochs", "14", "--patience", "0", "--batch-size", "16",
                 "--val-ratio", "0.25", "--device", "cpu", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads(out.out)
    # Held out from training: the validation photos' keyword sets, exactly.
    assert report["metrics"]["keyword_set_match"] >= 0.9, out.err
    assert report["base_metrics"]["keyword_set_match"] == 0.0
    version = versions.get_version(library, "kw-1")
    assert versions.version_kind(version) == "keywords" and version.config["kind"] == "keywords"
    assert version.config["preset"] is None  # BLIP cannot be asked: it learnt to write keywords unprompted

    # Each kind its own active model: activating the keywords version leaves captions alone.
    assert main([*lib, "models", "activate", "kw-1"]) == 0
    assert "active model for keywords" in capsys.readouterr().out
    assert versions.get_active_version(library, "keywords").name == "kw-1"
    assert versions.get_active_version(library) is None and current_model(library).version is None
    assert current_model(library, "keywords").version == "kw-1"

    # caption --kind keywords without --model: the keywords kind's active version.
    assert main([*lib, "caption", "--all", "--kind", "keywords", "--device", "cpu", "--max-new-tokens", "12"]) == 0
    assert "version 'kw-1' (active for keywords)" in capsys.readouterr().out
    with library.db.read() as session:
        rows = session.execute(select(Image.rel_path, Caption.text, Caption.source, Caption.model_version_id)
                               .join(Caption, Caption.image_id == Image.id)
                               .where(Caption.kind == "keywords", Caption.is_current.is_(True))).all()
    new = [(path, text, vid) for path, text, source, vid in rows if path.startswith("new/")]
    assert len(new) == 8 and {vid for _, _, vid in new} == {version.id}
    right = sum(set(parse_keywords(text)) == set(parse_keywords(_keywords(*path.removesuffix(".png").split("_")[1:])))
                for path, text, _ in new)
    assert right >= 7, new  # unseen photos (at most one slip)
    # The people's keywords stay theirs.
    assert {source for path, _, source, _ in rows if path.startswith("train/")} == {"human"}

    # A keywords version does not write captions.
    assert main([*lib, "caption", "--all", "--model", "kw-1", "--device", "cpu"]) == 2
    assert "trained to write keywords" in capsys.readouterr().err
    # eval without --model scores the active keywords version against keywords.
    assert main([*lib, "eval", "--kind", "keywords", "--device", "cpu", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["model"] == "kw-1" and scored["metrics"]["keyword_set_match"] >= 0.9
