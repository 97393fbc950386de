"""The window's long-lived search worker process: it indexes and embeds queries, one child for both."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from core import captions
from core.library import Library
from core.models import Image
from core.search.query import search
from core.search.worker_process import SearchWorker, SearchWorkerError, embed_query
from tests.support.library_helpers import write_jpeg


@pytest.fixture
def captioned(library: Library, photo_dir: Path) -> dict[str, int]:
    texts = {"p0.jpg": "a puppy running along the beach", "p1.jpg": "a bowl of ramen with a boiled egg",
             "p2.jpg": "a red sports car in front of a garage"}
    for n, name in enumerate(texts):
        write_jpeg(photo_dir / name, seed=n)
    library.scan([library.add_root(photo_dir).id])
    with library.db.write() as session:
        ids = {r: i for i, r in session.execute(select(Image.id, Image.rel_path))}
        for name, caption in texts.items():
            captions.add_model_caption(session, ids[name], caption, model_name="tiny")
    return ids


def test_one_child_indexes_twice_embeds_queries_and_cancels(library: Library, captioned: dict[str, int]) -> None:
    worker = SearchWorker()
    try:
        done: list[int] = []
        stats = worker.index(library.path, "text", progress=lambda p: done.append(p.done))
        assert stats.embedded == 3 and done
        child = worker._child
        assert child is not None
        # The second run is served by the same process, the model already loaded there.
        assert worker.index(library.path, "text").unchanged == 3
        assert worker._child is child
        vector = worker.embed("text", None, "dog on the sand")
        assert vector.dtype == np.float32 and abs(float(np.linalg.norm(vector)) - 1) < 1e-4
        assert np.allclose(vector, embed_query("text", None, "dog on the sand"), atol=1e-5)
        hits = search(library, "dog on the sand", limit=1, encode=worker.embed)
        assert hits[0].image_id == captioned["p0.jpg"]
        with library.db.write() as session:
            captions.set_human_caption(session, captioned["p1.jpg"], "a violin on a velvet cushion")
        cancel = threading.Event()
        cancel.set()
        stopped = worker.index(library.path, "text", cancel=cancel)
        assert stopped.cancelled and stopped.embedded == 0
        with pytest.raises(SearchWorkerError, match="not-a-model"):
            worker.embed("text", str(library.path.parent / "not-a-model"), "x")
        # A child that died is started again on the next request.
        child.kill()
        child.wait()
        assert worker.embed("text", None, "ramen").shape == vector.shape
        assert worker._child is not child
    finally:
        worker.close()
    assert child.poll() is not None


def test_a_dead_childs_end_reaches_only_the_requests_sent_to_it() -> None:
    """The old child's reader may see its end after a request went to its successor: that
    request must wait for the new child's answer, not fail with "stopped unexpectedly"."""
    import io
    import queue
    from types import SimpleNamespace

    worker = SearchWorker()
    old, new = SimpleNamespace(stdout=io.StringIO("")), SimpleNamespace(stdout=io.StringIO(""))
    old_box: queue.Queue = queue.Queue()
    new_box: queue.Queue = queue.Queue()
    worker._pending = {1: (old, old_box), 2: (new, new_box)}
    worker._read(old)  # the old child's stdout is at its end
    assert old_box.get_nowait() is None
    assert new_box.empty()
