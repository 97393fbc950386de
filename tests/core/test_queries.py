"""The GUI's Qt-free query and edit layer: filters, search, sort, counts, undoable edits."""

from __future__ import annotations

import functools
import operator

import pytest
from sqlalchemy import select

from core import edits, queries, view_rows
from core.captions import add_model_caption, set_human_caption
from core.models import Caption
from core.queries import ImageFilter, ModelKey
from tests.support.gui_fakes import build_library
from tests.support.window_helpers import current


@pytest.fixture
def sample(library, photo_dir):
    info = build_library(library, photo_dir, count=12, model_every=2, human_every=4, bad_files=1)
    return library, info


def ids_for(library, flt: ImageFilter) -> list[int]:
    with library.db.read() as session:
        return queries.filtered_ids(session, flt)


def rows_for(library, ids):
    with library.db.read() as session:
        return view_rows.fetch_rows(session, ids)


def test_states_partition_the_library(sample):
    library, _info = sample
    all_ids = ids_for(library, ImageFilter())
    assert len(all_ids) == 13  # 12 photos + 1 broken file
    by_state = {s: ids_for(library, ImageFilter(states=frozenset({s}))) for s in queries.DISPLAY_STATES}
    # k = 0..11 in name order: human on k%4==0 (0,4,8), model on the other evens (2,6,10).
    assert len(by_state["verified"]) == 3
    assert len(by_state["model"]) == 3
    assert len(by_state["uncaptioned"]) == 6
    assert len(by_state["error"]) == 1
    assert sorted(functools.reduce(operator.iadd, by_state.values(), [])) == sorted(all_ids)
    # The badge computed in Python agrees with the SQL filter for every row.
    rows = rows_for(library, all_ids)
    for state, ids in by_state.items():
        assert {rows[i].state for i in ids} <= {state}


def test_sort_by_name_date_and_confidence(sample):
    library, _info = sample
    rows = rows_for(library, ids_for(library, ImageFilter()))
    by_name = ids_for(library, ImageFilter(sort="name"))
    # By file name, not by path: folders interleave; the path breaks ties between equal names.
    assert [rows[i].rel_path for i in by_name] == sorted((r.rel_path for r in rows.values()),
                                                         key=lambda p: (p.rsplit("/", 1)[-1], p))
    assert ids_for(library, ImageFilter(sort="name", descending=True)) == by_name[::-1]
    by_conf = ids_for(library, ImageFilter(states=frozenset({"model"}), sort="confidence"))
    scores = [rows[i].score for i in by_conf]
    assert scores == sorted(scores) and scores[0] < scores[-1]
    # Unscored rows go last even in ascending order.
    everything = ids_for(library, ImageFilter(sort="confidence"))
    assert [rows[i].score is not None for i in everything][:3] == [True, True, True]
    assert rows[everything[-1]].score is None
    by_date = ids_for(library, ImageFilter(sort="date"))
    assert sorted(by_date) == sorted(by_name)


def test_sort_by_name_uses_the_file_name(library, photo_dir):
    from tests.support.imagegen import write_jpeg

    for rel in ("b/zz.jpg", "a/yy.jpg", "c/d/aa.jpg", "top.jpg", "a/aa.jpg"):
        (photo_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        write_jpeg(photo_dir / rel, seed=len(rel))
    library.scan([library.add_root(photo_dir).id])
    ids = ids_for(library, ImageFilter(sort="name"))
    assert [rows_for(library, ids)[i].rel_path for i in ids] == ["a/aa.jpg", "c/d/aa.jpg", "top.jpg", "a/yy.jpg",
                                                                 "b/zz.jpg"]


def test_review_queue_is_model_captions_worst_first(sample):
    library, _info = sample
    queue = ids_for(library, queries.review_queue_filter())
    rows = rows_for(library, queue)
    assert [rows[i].source for i in queue] == ["model"] * 3
    assert [rows[i].score for i in queue] == sorted(rows[i].score for i in queue)
    with library.db.read() as session:
        assert queries.least_confident(session, ImageFilter()) == queue[0]
        first = rows[queue[0]]
        assert queries.least_confident(session, ImageFilter(), after=(first.score, first.id)) == queue[1]
        last = rows[queue[-1]]
        assert queries.least_confident(session, ImageFilter(), after=(last.score, last.id)) is None


def test_full_text_search_current_captions_only(sample):
    library, info = sample
    ids = info["ids"]
    with library.db.write() as session:
        add_model_caption(session, ids[1], "A Café by the Harbour", model_name="m", score=-0.3)
        # Superseded words must not be found: history rows are not current.
        add_model_caption(session, ids[3], "zebra crossing", model_name="m", score=-0.3)
        set_human_caption(session, ids[3], "pedestrian crossing")
    assert ids_for(library, ImageFilter(text="cafe")) == [ids[1]]  # diacritics removed
    assert ids_for(library, ImageFilter(text="harb")) == [ids[1]]  # prefix of last word
    assert ids_for(library, ImageFilter(text="cafe harbour")) == [ids[1]]
    assert ids_for(library, ImageFilter(text="cafe zebra")) == []
    assert ids_for(library, ImageFilter(text="zebra")) == []
    assert ids_for(library, ImageFilter(text="crossing")) == [ids[3]]
    # FTS syntax in the user's text is treated as words, never a syntax error.
    assert ids_for(library, ImageFilter(text='"cafe* (-')) == [ids[1]]
    assert ids_for(library, ImageFilter(text='harbour NEAR')) == []
    assert queries.fts_query("  ") is None


def test_folder_model_and_confidence_filters(sample):
    library, info = sample
    rows = rows_for(library, ids_for(library, ImageFilter()))
    beach = ids_for(library, ImageFilter(root_id=info["root_id"], folder="beach/"))
    assert beach and all(rows[i].rel_path.startswith("beach/") for i in beach)
    assert len(beach) == 6
    assert ids_for(library, ImageFilter(root_id=info["root_id"] + 99)) == []
    blip = ModelKey("Salesforce/blip-image-captioning-base")
    by_model = set(ids_for(library, ImageFilter(model=blip)))
    # The model's own current captions plus the ones a person accepted/edited from them.
    assert by_model == {i for i in rows if rows[i].source in ("model", "human")}
    with library.db.read() as session:
        keys = dict(view_rows.model_keys(session))
    assert keys[blip] == 6
    assert ids_for(library, ImageFilter(model=ModelKey("other"))) == []
    scored = [i for i in rows if rows[i].score is not None]
    mid = sorted(rows[i].score for i in scored)[1]
    hi = set(ids_for(library, ImageFilter(min_score=mid)))
    assert hi == {i for i in scored if rows[i].score >= mid}
    lo = set(ids_for(library, ImageFilter(max_score=mid)))
    assert lo == {i for i in scored if rows[i].score <= mid}


def test_folder_tree_counts(sample):
    library, _info = sample
    with library.db.read() as session:
        (root,) = view_rows.folder_tree(session)
    assert root.counts.images == 13
    assert root.counts.errors == 1
    assert set(root.children) == {"beach", "city"}
    beach, city = root.children["beach"], root.children["city"]
    assert beach.counts.images + city.counts.images == 13
    assert beach.prefix == "beach/"
    total = view_rows.Counts()
    total.add(beach.counts)
    total.add(city.counts)
    assert total == root.counts
    assert root.counts.uncaptioned + root.counts.model + root.counts.verified + root.counts.errors == 13


def test_next_in_state_wraps(sample):
    library, _ = sample
    ordered = ids_for(library, ImageFilter())
    rows = rows_for(library, ordered)
    with library.db.read() as session:
        row = queries.next_in_state(session, ordered, 0, "uncaptioned", step=2)
        assert rows[ordered[row]].state == "uncaptioned" and row > 0
        first = next(r for r, i in enumerate(ordered) if rows[i].state == "uncaptioned")
        assert queries.next_in_state(session, ordered, len(ordered) - 1, "uncaptioned") == first
        assert queries.next_in_state(session, [], 0, "uncaptioned") is None


def test_edit_undo_redo_restores_the_model_caption(sample):
    library, info = sample
    image_id = info["ids"][2]  # a model caption
    model_caption = current(library, image_id)
    assert model_caption.source == "model"
    change = edits.save_edit(library.db, image_id, "  my better words ")
    assert current(library, image_id).text == "my better words"
    assert current(library, image_id).source == "human"
    edits.apply_changes(library.db, [change], undo=True)
    back = current(library, image_id)
    assert (back.id, back.source, back.score) == (model_caption.id, "model", model_caption.score)
    edits.apply_changes(library.db, [change], undo=False)
    assert current(library, image_id).id == change.after
    # Nothing was lost: the history holds both rows, and no duplicate was written.
    with library.db.read() as session:
        texts = list(session.scalars(select(Caption.text).where(Caption.image_id == image_id)))
    assert texts == [model_caption.text, "my better words"]


def test_undo_refuses_when_caption_changed_since(sample):
    library, info = sample
    image_id = info["ids"][2]
    change = edits.save_edit(library.db, image_id, "first")
    edits.save_edit(library.db, image_id, "second")
    with pytest.raises(edits.StaleChangeError):
        edits.apply_changes(library.db, [change], undo=True)
    assert current(library, image_id).text == "second"


def test_edit_noop_accept_and_revert(sample):
    library, info = sample
    image_id = info["ids"][2]
    original = current(library, image_id)
    change = edits.accept(library.db, image_id)
    now = current(library, image_id)
    assert now.source == "human" and now.text == original.text and now.parent_id == original.id
    assert edits.accept(library.db, image_id) is None  # already verified
    assert edits.save_edit(library.db, image_id, original.text) is None  # same words
    edits.save_edit(library.db, image_id, "changed")
    revert = edits.revert(library.db, original.id)
    assert current(library, image_id).text == original.text
    assert revert.image_id == image_id
    edits.apply_changes(library.db, [revert], undo=True)
    assert current(library, image_id).text == "changed"
    with pytest.raises(edits.CaptionError):
        edits.save_edit(library.db, image_id, "   ")
    assert change.before == original.id


def test_find_replace_candidates_and_undo(sample):
    library, info = sample
    ids = info["ids"]
    with library.db.write() as session:
        add_model_caption(session, ids[1], "A DOG and a dog", model_name="m", score=-0.2)
        add_model_caption(session, ids[3], "Überall Straße", model_name="m", score=-0.2)
    with library.db.read() as session:
        hits = queries.find_replace_candidates(session, ImageFilter(), "dog")
        sensitive = queries.find_replace_candidates(session, ImageFilter(), "DOG", case_sensitive=True)
        unicode_hits = queries.find_replace_candidates(session, ImageFilter(), "überall")
    hit_ids = {h[0] for h in hits}
    assert ids[1] in hit_ids  # "two dogs playing ..." captions match too
    assert {h[0] for h in sensitive} == {ids[1]}
    assert {h[0] for h in unicode_hits} == {ids[3]}
    changes = edits.replace_captions(library.db, hits, "dog", "cat")
    assert {c.image_id for c in changes} == hit_ids
    assert current(library, ids[1]).text == "A cat and a cat"
    edits.apply_changes(library.db, changes, undo=True)
    assert current(library, ids[1]).text == "A DOG and a dog"
    assert current(library, ids[1]).source == "model"
    edits.apply_changes(library.db, changes, undo=False)
    assert current(library, ids[1]).text == "A cat and a cat"
