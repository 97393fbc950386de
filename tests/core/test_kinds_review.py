"""Review per caption kind (core side): filters, search with ``keyword:``, find-and-replace,
accept on one photo and on a selection, undo — each on one kind, never touching another."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from core import edits
from core.captions import add_model_caption, current_caption, set_human_caption
from core.kinds import keyword_terms
from core.library import Library
from core.models import Image
from core.queries import ImageFilter, count_filtered, filtered_ids, find_replace_candidates, review_queue_filter
from tests.support.imagegen import write_jpeg


@pytest.fixture
def kinds(library: Library, photo_dir: Path) -> tuple[Library, dict[str, int]]:
    """Four photos: captions by a model; keywords by a model on a, b, c (d has none)."""
    for name in "abcd":
        write_jpeg(photo_dir / f"{name}.jpg", seed=ord(name))
    library.scan([library.add_root(photo_dir).id])
    with library.db.write() as session:
        ids = {i.rel_path[0]: i.id for i in session.scalars(select(Image))}
        for name, image_id in ids.items():
            add_model_caption(session, image_id, f"a photo of a beach, {name}", model_name="m", score=-1.0)
        add_model_caption(session, ids["a"], "beach, sunset", model_name="m", score=-2.0, kind="keywords")
        add_model_caption(session, ids["b"], "sandy beach; places|beach house", model_name="m", score=-0.5,
                          kind="keywords")
        add_model_caption(session, ids["c"], "animals|dogs, Beach", model_name="m", score=-1.5, kind="keywords")
    return library, ids


def _ids(library: Library, flt: ImageFilter) -> list[int]:
    with library.db.read() as session:
        return filtered_ids(session, flt)


def test_keyword_terms_parse_out_of_the_search_text() -> None:
    assert keyword_terms('dog keyword:Beach keyword:"Sandy  Beach" Keywords:places|beach') == (
        "dog", ["beach", "sandy beach", "places|beach"])
    assert keyword_terms("notakeyword:beach") == ("notakeyword:beach", [])


def test_keyword_search_matches_whole_keywords_at_any_level(kinds) -> None:
    library, ids = kinds
    assert set(_ids(library, ImageFilter(text="keyword:beach"))) == {ids["a"], ids["c"]}  # not "sandy beach"
    assert _ids(library, ImageFilter(text='keyword:"sandy beach"')) == [ids["b"]]
    assert _ids(library, ImageFilter(text="keyword:dogs")) == [ids["c"]]  # a level of animals|dogs
    assert _ids(library, ImageFilter(text="keyword:places|beach house")) == []  # a path is whole
    assert _ids(library, ImageFilter(text='keyword:"places|beach house"')) == [ids["b"]]
    # With words: the words search the filter's kind, the keyword term the keywords.
    assert _ids(library, ImageFilter(text="keyword:beach sunset", kind="keywords")) == [ids["a"]]
    assert _ids(library, ImageFilter(text="keyword:beach sunset")) == []  # no caption says sunset
    assert set(_ids(library, ImageFilter(text="keyword:beach photo"))) == {ids["a"], ids["c"]}


def test_filters_and_review_queue_per_kind(kinds) -> None:
    library, ids = kinds
    queue = review_queue_filter(ImageFilter(kind="keywords"))
    # Least confident keywords first; d has no keywords (uncaptioned for that kind).
    assert _ids(library, queue) == [ids["a"], ids["c"], ids["b"]]
    with library.db.read() as session:
        assert count_filtered(session, ImageFilter(states=frozenset({"uncaptioned"}), kind="keywords")) == 1
        assert count_filtered(session, ImageFilter(states=frozenset({"uncaptioned"}))) == 0


def test_accept_replace_and_undo_stay_in_their_kind(kinds) -> None:
    library, ids = kinds
    db = library.db
    # Accept on a selection: the keywords of a, b and d (d has none: left alone).
    changes = edits.accept_many(db, [ids["a"], ids["b"], ids["d"]], kind="keywords")
    assert [c.image_id for c in changes] == [ids["a"], ids["b"]] and {c.kind for c in changes} == {"keywords"}
    with db.read() as session:
        assert current_caption(session, ids["a"], "keywords").source == "human"
        assert current_caption(session, ids["a"]).source == "model"  # the caption is not verified with it
        assert edits.accept_many(db, [ids["a"]], kind="keywords") == []  # already a person's

    # Find and replace in the keywords only.
    flt = ImageFilter(kind="keywords")
    with db.read() as session:
        candidates = find_replace_candidates(session, flt, "beach")
    assert {image_id for image_id, _, _ in candidates} == {ids["a"], ids["b"], ids["c"]}
    replaced = edits.replace_captions(db, candidates, "beach", "coast", kind="keywords")
    with db.read() as session:
        assert current_caption(session, ids["c"], "keywords").text == "animals|dogs\ncoast"
        assert current_caption(session, ids["c"]).text == "a photo of a beach, c"  # captions untouched
    edits.apply_changes(db, replaced, undo=True)
    with db.read() as session:
        assert current_caption(session, ids["c"], "keywords").text == "animals|dogs\nbeach"

    # One photo: an edit, saving the same keywords again changes nothing, undo brings the model's back.
    change = edits.save_edit(db, ids["c"], "dogs, Beach", kind="keywords")
    assert change is not None and change.kind == "keywords"
    assert edits.save_edit(db, ids["c"], "DOGS;beach", kind="keywords") is None
    edits.apply_changes(db, [change], undo=True)
    with db.read() as session:
        assert current_caption(session, ids["c"], "keywords").source == "model"
    single = edits.accept(db, ids["c"], kind="keywords")
    assert single is not None and single.kind == "keywords"
    with db.write() as session:
        set_human_caption(session, ids["d"], "a person's caption")
    assert edits.accept(db, ids["d"]) is None
