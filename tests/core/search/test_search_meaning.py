"""Search by meaning over caption texts, with the real offline all-MiniLM-L6-v2."""

from __future__ import annotations

import itertools
import re
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from core import captions
from core.library import Library
from core.models import Caption, Embedding, Image, LibraryRoot
from core.queries import ImageFilter, filtered_ids
from core.search.embedders import DEFAULT_TEXT_MODEL
from core.search.index_job import update_index
from core.search.query import search
from tests.support.library_helpers import write_jpeg
from tests.support.search_corpus import OTHERS, PAIRS

_STOP = set("a an the of on in at by with and to for from over under near through along its their her his "
            "someone being just some is are up".split())


def _content_words(sentence: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", sentence.lower()) if w not in _STOP}


def _share_a_word(a: str, b: str) -> bool:
    """Same word, or the same first four letters (plural, -ing, ...)."""
    return any(x == y or (len(x) >= 4 and len(y) >= 4 and x[:4] == y[:4])
               for x in _content_words(a) for y in _content_words(b))


@pytest.fixture(scope="module")
def corpus_library(tmp_path_factory: pytest.TempPathFactory):
    """200 captioned images (no files: the text index needs only the rows), indexed."""
    folder = tmp_path_factory.mktemp("corpus")
    library = Library(folder / "library.db")
    with library.db.write() as session:
        root = LibraryRoot(path=str(folder / "photos"))
        session.add(root)
        session.flush()
        for n, caption in enumerate([c for c, _ in PAIRS] + OTHERS):
            image = Image(root_id=root.id, rel_path=f"p{n:03}.jpg", size=1, mtime_ns=1, fingerprint=f"{n:040x}")
            session.add(image)
            session.flush()
            captions.add_model_caption(session, image.id, caption, model_name="tiny")
    stats = update_index(library)
    assert (stats.embedded, stats.errors, stats.cancelled) == (200, 0, False)
    yield library
    library.close()


def test_the_corpus_is_what_it_claims() -> None:
    captions_ = [c for c, _ in PAIRS] + OTHERS
    assert len(PAIRS) == 50 and len(set(captions_)) == 200
    assert [q for c, q in PAIRS if _share_a_word(c, q)] == []
    assert _share_a_word("a puppy running", "puppies run")  # the check itself can fail


def test_paraphrased_queries_find_their_caption(corpus_library: Library) -> None:
    with corpus_library.db.read() as session:
        id_of = {t: i for i, t in session.execute(select(Image.id, Caption.text).join(Caption))}
        fts_top1 = sum(
            (ids := filtered_ids(session, ImageFilter(text=q))) != [] and ids[0] == id_of[c] for c, q in PAIRS
        )
    top1 = top5 = 0
    for caption, query in PAIRS:
        hits = search(corpus_library, query, limit=5)
        ranked = [h.image_id for h in hits]
        top1 += ranked[0] == id_of[caption]
        top5 += id_of[caption] in ranked
        assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
    print(f"\nby meaning: top-1 {top1 / 50:.2f}, top-5 {top5 / 50:.2f}; FTS5 words: top-1 {fts_top1 / 50:.2f}")
    assert top1 / 50 >= 0.8 and top5 / 50 >= 0.95


def test_the_index_is_incremental(corpus_library: Library) -> None:
    again = update_index(corpus_library)
    assert (again.embedded, again.unchanged, again.removed) == (0, 200, 0)


@pytest.fixture
def small_library(library: Library, photo_dir: Path) -> Library:
    texts = ["a puppy running along the beach", "a bowl of ramen with a boiled egg",
             "a red sports car in front of a garage", "a lighthouse on a rocky coast at sunset"]
    for n in range(len(texts)):
        write_jpeg(photo_dir / ("a" if n < 2 else "b") / f"p{n}.jpg", seed=n)
    library.scan([library.add_root(photo_dir).id])
    with library.db.write() as session:
        for image, caption in zip(session.scalars(select(Image).order_by(Image.rel_path)), texts, strict=True):
            captions.add_model_caption(session, image.id, caption, model_name="tiny")
    assert update_index(library).embedded == 4
    return library


def _ids(library: Library) -> dict[str, int]:
    with library.db.read() as session:
        return {r: i for i, r in session.execute(select(Image.id, Image.rel_path))}


def test_a_changed_caption_is_not_found_by_its_old_meaning_and_reindexes_alone(small_library: Library) -> None:
    dog = _ids(small_library)["a/p0.jpg"]
    assert search(small_library, "dog on the sand", limit=1)[0].image_id == dog
    with small_library.db.write() as session:
        captions.set_human_caption(session, dog, "a violin on a velvet cushion")
    assert dog not in [h.image_id for h in search(small_library, "dog on the sand", limit=None)]
    stats = update_index(small_library)
    assert (stats.embedded, stats.unchanged) == (1, 3)
    assert search(small_library, "fiddle", limit=1)[0].image_id == dog


def test_missing_and_deleted_photos_never_come_back(small_library: Library, photo_dir: Path) -> None:
    ids = _ids(small_library)
    (photo_dir / "a" / "p0.jpg").unlink()
    small_library.scan()
    assert ids["a/p0.jpg"] not in [h.image_id for h in search(small_library, "dog on the sand", limit=None)]
    assert update_index(small_library).removed == 1
    small_library.remove_root(small_library.roots()[0].id)
    with small_library.db.read() as session:
        assert session.scalar(select(func.count()).select_from(Embedding)) == 0  # cascade
    assert search(small_library, "dog on the sand") == []


def test_results_combine_with_filters(small_library: Library) -> None:
    ids = _ids(small_library)
    root = small_library.roots()[0].id
    hits = search(small_library, "dog on the sand", flt=ImageFilter(root_id=root, folder="b/"), limit=None)
    assert {h.image_id for h in hits} == {ids["b/p2.jpg"], ids["b/p3.jpg"]}
    assert search(small_library, "dog on the sand", flt=ImageFilter(states=frozenset({"verified"}))) == []


def test_a_cancelled_run_keeps_its_batches_and_the_next_one_finishes(small_library: Library) -> None:
    with small_library.db.write() as session:
        session.execute(Embedding.__table__.delete())
    cancel = threading.Event()

    def stop_after_first(progress) -> None:  # noqa: ANN001
        if progress.done >= 1:
            cancel.set()

    first = update_index(small_library, batch_size=1, progress=stop_after_first, cancel=cancel)
    assert first.cancelled and 1 <= first.embedded < 4
    second = update_index(small_library)
    assert (second.embedded, second.unchanged) == (4 - first.embedded, first.embedded)
    assert small_library.jobs("index")[-2].state == "cancelled"


def test_the_default_model_is_recorded_by_name(small_library: Library) -> None:
    with small_library.db.read() as session:
        assert set(session.scalars(select(Embedding.model))) == {DEFAULT_TEXT_MODEL}


def test_every_caption_kind_is_embedded_once_the_library_has_kinds(small_library: Library) -> None:
    """The index embeds each kind's current text, and a hit says which kind matched."""
    car = _ids(small_library)["b/p2.jpg"]
    with small_library.db.write() as session:
        captions.set_human_caption(session, car, "an owl perched on a branch at night", kind="alt_text")
    stats = update_index(small_library)
    assert (stats.embedded, stats.unchanged) == (1, 4)
    hit = search(small_library, "nocturnal bird", limit=1)[0]
    assert (hit.image_id, hit.kind) == (car, "alt_text")
    assert search(small_library, "crimson automobile", limit=1)[0].kind == "caption"
    with small_library.db.write() as session:
        session.execute(text("UPDATE captions SET is_current = 0 WHERE kind = 'alt_text'"))
    assert all(h.kind == "caption" for h in search(small_library, "nocturnal bird", limit=None))
    assert update_index(small_library).removed == 1
