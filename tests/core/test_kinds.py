"""Caption kinds in the store: one current value per (photo, kind), keywords, alt-text checks."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from core import captions, kinds, queries, view_rows
from core.library import Library
from core.models import Image
from core.provenance import Provenance


def _image(library: Library, rel_path: str = "a.jpg") -> int:
    with library.db.write() as session:
        root_id = session.execute(
            text("INSERT INTO library_roots(path, added_at) VALUES (:p, '2026-01-01') RETURNING id"),
            {"p": f"/photos/{rel_path}"},
        ).scalar_one()
        image = Image(root_id=root_id, rel_path=rel_path, size=1, mtime_ns=1, fingerprint="f" * 32)
        session.add(image)
        session.flush()
        return image.id


def test_each_kind_has_its_own_current_value_and_history(library: Library) -> None:
    image_id = _image(library)
    with library.db.write() as session:
        captions.add_model_caption(session, image_id, "a dog on a beach", model_name="m")
        captions.add_model_caption(session, image_id, "A dog runs on sand.", model_name="m", kind="alt_text")
        captions.set_human_caption(session, image_id, "Rex at Brighton", kind="title")
    with library.db.read() as session:
        assert captions.current_caption(session, image_id).text == "a dog on a beach"
        assert captions.current_caption(session, image_id, "alt_text").text == "A dog runs on sand."
        assert captions.current_caption(session, image_id, "title").source == "human"
        assert captions.current_caption(session, image_id, "keywords") is None
        assert [c.kind for c in captions.caption_history(session, image_id, None)] == ["caption", "alt_text", "title"]
        details = view_rows.caption_details(session, image_id, "alt_text")
        assert [c.text for c in details.history] == ["A dog runs on sand."]
        # Each kind has its own display state: the grid's filter asks by kind.
        for kind, state in (("caption", "model"), ("title", "verified"), ("keywords", "uncaptioned")):
            flt = queries.ImageFilter(states=frozenset({state}), kind=kind)
            assert queries.filtered_ids(session, flt) == [image_id], kind
        # Text search looks at the filter's kind.
        assert queries.filtered_ids(session, queries.ImageFilter(text="sand", kind="alt_text")) == [image_id]
        assert queries.filtered_ids(session, queries.ImageFilter(text="sand")) == []


def test_a_persons_value_is_never_overwritten_per_kind(library: Library) -> None:
    image_id = _image(library)
    with library.db.write() as session:
        mine = captions.set_human_caption(session, image_id, "dogs, beach", kind="keywords")
        # The person's keywords stay; the model's are history.
        later = captions.add_model_caption(session, image_id, "cat, sofa", model_name="m", kind="keywords")
        imported = captions.add_import_caption(session, image_id, "sea", origin="x.txt", kind="keywords")
        assert not later.is_current and not imported.is_current
        # ... while the caption kind, which no person wrote, takes the model's words.
        assert captions.add_model_caption(session, image_id, "a dog", model_name="m").is_current
        assert captions.current_caption(session, image_id, "keywords").id == mine.id
        # A person's caption kind does not protect the alt text.
        captions.set_human_caption(session, image_id, "Rex")
        assert captions.add_model_caption(session, image_id, "A dog.", model_name="m", kind="alt_text").is_current
    # The database trigger holds per kind too.
    insert = text("INSERT INTO captions(image_id, kind, text, source, is_current, created_at) "
                  "VALUES (:i, :k, 'x', 'model', 1, '2026-01-01')")
    with pytest.raises(IntegrityError, match="human caption is current"):
        with library.db.write() as session:
            session.execute(insert, {"i": image_id, "k": "keywords"})
    with library.db.write() as session:  # no person's title: allowed
        session.execute(insert, {"i": image_id, "k": "title"})
    # Undo of a step in one kind never touches another kind.
    with library.db.write() as session:
        current_kw = captions.current_caption(session, image_id, "keywords").id
        with pytest.raises(captions.StaleCaptionError):
            captions.repoint_current(session, image_id, expected=current_kw, target=None)  # kind caption's id differs
        captions.repoint_current(session, image_id, expected=current_kw, target=None, kind="keywords")
        assert captions.current_caption(session, image_id, "keywords") is None
        assert captions.current_caption(session, image_id).text == "Rex"


def test_user_defined_kinds_live_in_the_library(library: Library) -> None:
    image_id = _image(library)
    with library.db.write() as session:
        kinds.add_kind(session, "training_prompt", "Training  prompt", prompt="Write a text-to-image prompt.")
        with pytest.raises(kinds.KindError, match="exists already"):
            kinds.add_kind(session, "training_prompt", "again")
        with pytest.raises(kinds.KindError, match="cannot name"):
            kinds.add_kind(session, "Bad Name'", "x")
        with pytest.raises(kinds.KindError, match="unknown variable"):
            kinds.add_kind(session, "bad_prompt", "x", prompt="Describe {nothing}")
        captions.add_model_caption(session, image_id, "photo of a dog, 35mm", model_name="m", kind="training_prompt")
        with pytest.raises(kinds.KindError, match="no caption kind 'nope'"):
            captions.set_human_caption(session, image_id, "x", kind="nope")
    reopened = Library(library.path)
    try:
        with reopened.db.write() as session:
            kind = kinds.get_kind(session, "training_prompt")
            assert (kind.label, kind.prompt, kind.builtin) == ("Training prompt", "Write a text-to-image prompt.", False)
            assert list(kinds.all_kinds(session))[-1] == "training_prompt"
            with pytest.raises(kinds.KindError, match="values"):
                kinds.remove_kind(session, "training_prompt")  # its values stay readable
            with pytest.raises(kinds.KindError, match="built in"):
                kinds.remove_kind(session, "alt_text")
            kinds.add_kind(session, "unused", "Unused")
            kinds.remove_kind(session, "unused")
            assert "unused" not in kinds.all_kinds(session)
    finally:
        reopened.close()


def test_keywords_are_stored_one_a_line_with_their_hierarchy(library: Library) -> None:
    image_id = _image(library)
    with library.db.write() as session:
        row = captions.set_human_caption(session, image_id, "Animals | Dogs, beach,  BEACH , sunset.", kind="keywords")
        assert row.text == "animals|dogs\nbeach\nsunset"
        assert kinds.parse_keywords(row.text) == [("animals", "dogs"), ("beach",), ("sunset",)]
        with pytest.raises(captions.CaptionError, match="empty"):
            captions.add_model_caption(session, image_id, "Keywords: , ;", model_name="m", kind="keywords")


# Twenty shapes of keyword lists models really answer with.
KEYWORD_SHAPES = [
    ("beach, sunset, ocean", ["beach", "sunset", "ocean"]),
    ("beach,sunset,ocean", ["beach", "sunset", "ocean"]),
    ("Keywords: beach, sunset, ocean.", ["beach", "sunset", "ocean"]),
    ("Here are some keywords for this image: dog, park, grass", ["dog", "park", "grass"]),
    ("- beach\n- sunset\n- ocean", ["beach", "sunset", "ocean"]),
    ("* Beach\n* Sunset", ["beach", "sunset"]),
    ("• beach\n• sunset", ["beach", "sunset"]),
    ("1. beach\n2. sunset\n3. ocean", ["beach", "sunset", "ocean"]),
    ("beach\r\nsunset\r\n", ["beach", "sunset"]),
    ("#beach #sunset #goldenhour", ["beach", "sunset", "goldenhour"]),
    ('"beach", "sunset", "ocean"', ["beach", "sunset", "ocean"]),
    ('["beach", "sunset", "sea view"]', ["beach", "sunset", "sea view"]),
    ("beach; sunset; ocean", ["beach", "sunset", "ocean"]),
    ("Beach, beach , BEACH, sunset", ["beach", "sunset"]),
    ("  golden   hour ,\tsea\u00a0view ", ["golden hour", "sea view"]),
    ("animals|dogs|terrier, animals | dogs", ["animals|dogs|terrier", "animals|dogs"]),
    ("beach, sunset, and ocean", ["beach", "sunset", "ocean"]),
    ("**beach**, *sunset*, `ocean`", ["beach", "sunset", "ocean"]),
    ("Keywords:\n\nbeach, sunset\nocean\n\n", ["beach", "sunset", "ocean"]),
    ("Cafe\u0301, café, CAFÉ", ["café"]),
]


@pytest.mark.parametrize(("raw", "expected"), KEYWORD_SHAPES, ids=[f"shape{i}" for i in range(len(KEYWORD_SHAPES))])
def test_parse_keywords_from_model_output(raw: str, expected: list[str]) -> None:
    got = kinds.parse_keywords(raw)
    assert ["|".join(k) for k in got] == expected
    assert kinds.parse_keywords(kinds.format_keywords(got)) == got  # the stored form reads back the same


def test_alt_text_length_check() -> None:
    assert kinds.length_check("alt_text", "x" * 125) is None
    assert kinds.length_check("alt_text", "x" * 126).level == "note"
    assert kinds.length_check("alt_text", "x" * 250).level == "note"
    assert kinds.length_check("alt_text", "x" * 251).level == "warning"
    assert kinds.length_check("caption", "x" * 999) is None


def test_provenance_record_round_trips() -> None:
    data = {"generation": {"num_beams": 2}, "preset": "keywords", "scores": {"mean_logprob": -0.2},
            "bulk_replace": {"find": "a", "replace": "b"}, "index": 3, "runner": "ray"}
    record = Provenance.from_json(data)
    assert record.preset == "keywords" and record.bulk_replace.replace == "b"
    assert record.extra == {"index": 3, "runner": "ray"} and record.get("index") == 3
    assert record.to_json() == data
    assert Provenance.from_json(None) == Provenance()


def test_edits_and_their_undo_work_per_kind(library: Library) -> None:
    from core import edits

    image_id = _image(library)
    other_id = _image(library, "b.jpg")
    with library.db.write() as session:
        captions.add_model_caption(session, image_id, "a dog", model_name="m")
        model_alt = captions.add_model_caption(session, image_id, "A dog.", model_name="m", kind="alt_text")
        captions.add_model_caption(session, other_id, "sea, sand", model_name="m", kind="keywords")

    def current(kind: str, img: int = image_id) -> tuple[str, str] | None:
        with library.db.read() as session:
            c = captions.current_caption(session, img, kind)
            return (c.text, c.source) if c else None

    edit = edits.save_edit(library.db, image_id, "A brown dog on sand.", "alt_text")
    assert edit is not None and edit.kind == "alt_text"
    assert current("alt_text") == ("A brown dog on sand.", "human") and current("caption") == ("a dog", "model")
    # The same words again are no change; keywords compare as stored (normalized).
    assert edits.save_edit(library.db, image_id, " A brown dog on sand. ", "alt_text") is None
    kw = edits.save_edit(library.db, image_id, "Dog, Beach", "keywords")
    assert kw is not None and edits.save_edit(library.db, image_id, "dog\nbeach", "keywords") is None
    # Undo brings back the model's alt text itself; the caption kind is untouched.
    edits.apply_changes(library.db, [edit], undo=True)
    with library.db.read() as session:
        assert captions.current_caption(session, image_id, "alt_text").id == model_alt.id
    assert current("caption") == ("a dog", "model")
    edits.apply_changes(library.db, [edit], undo=False)
    assert current("alt_text") == ("A brown dog on sand.", "human")

    # Accept on a selection, per kind: only the photos with a model value of that kind.
    changes = edits.accept_many(library.db, [image_id, other_id], "keywords")
    assert [(c.image_id, c.kind) for c in changes] == [(other_id, "keywords")]
    assert current("keywords", other_id) == ("sea\nsand", "human") and current("caption") == ("a dog", "model")
    edits.apply_changes(library.db, changes, undo=True)
    assert current("keywords", other_id) == ("sea\nsand", "model")
    assert edits.accept(library.db, image_id, "caption").kind == "caption"

    # Find-and-replace in one kind leaves the others alone.
    with library.db.read() as session:
        found = queries.find_replace_candidates(session, queries.ImageFilter(kind="alt_text"), "dog")
    replaced = edits.replace_captions(library.db, found, "dog", "puppy", kind="alt_text")
    assert [c.kind for c in replaced] == ["alt_text"] and current("alt_text")[0] == "A brown puppy on sand."
    assert current("caption") == ("a dog", "human")


def test_keyword_vocabulary_counts_every_level_most_used_first(library: Library) -> None:
    first, second = _image(library), _image(library, "b.jpg")
    with library.db.write() as session:
        captions.set_human_caption(session, first, "beach, animals|dogs", kind="keywords")
        captions.add_model_caption(session, second, "animals|cats, beach", model_name="m", kind="keywords")
        captions.add_model_caption(session, second, "not, a, keyword", model_name="m")  # another kind
        old = captions.add_model_caption(session, first, "stale", model_name="m", kind="alt_text")
        assert old.is_current
    with library.db.read() as session:
        vocabulary = kinds.keyword_vocabulary(session)
    assert vocabulary == ["animals", "beach", "animals|cats", "animals|dogs"]
