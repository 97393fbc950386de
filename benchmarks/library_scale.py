"""How a CaptionDesk library (one SQLite file) behaves at 1 million images and captions.

Builds a library through the real code paths and measures it at a small size ("start")
and at the full size (default 1,000,000 images, each with one model caption):

* **images** go in through the scanner's own insert path (``core.scanner._RootScan.flush``,
  ``core.scanner.BATCH_SIZE`` rows per transaction); only the file reading is replaced
  by synthetic columns (fingerprint, split key, size, mtime, 4000x3000 JPEG);
* **captions** measured at the start and at the full size go through the captioning
  engine's commit (``commit_caption_batch``: one transaction
  per batch, ``core.captions.add_model_caption`` per image) plus the job-record update
  the engine makes after each batch (``JobRun.save``), with the engine's provenance
  dict; 3/4 of them in the default batch (``CaptionJobSpec().batch_size`` = 8), the rest
  in batches of 64, to split the per-transaction from the per-row cost;
* the captions in between (all but the measured ones) are bulk-inserted as the same ORM
  rows (``insert(Caption)``, same columns, same JSON provenance, same triggers and FTS
  index updates), 50,000 per transaction, so 1M rows take minutes, not an hour;
* then the queries the GUI and the jobs run, at the start and at the full size: the
  grid's id lists (``core.queries.filtered_ids`` with an ``ImageFilter``), a text search
  (FTS5), ``Library.status()``, the folder tree, a grid chunk (``fetch_rows``), the
  pending selection of a caption job (``core.captioning.engine.select_images``: a resume
  run that selects nothing, and a new model that selects everything) and the database
  side of a no-change rescan (``_RootScan`` loading every known record);
* the file size of the library (+ WAL) per row, and per table and index (``dbstat``).

Prints one table with ratios full-size / start, and how long the whole run took.

    python benchmarks/library_scale.py                      # 1,000,000 images
    python benchmarks/library_scale.py --images 200000 --measure 5000
    python benchmarks/library_scale.py --keep /tmp/scale.db  # keep the library file
    python benchmarks/library_scale.py --cache-mb 256        # experiment: a bigger SQLite page cache
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert  # noqa: E402

from core import scanner  # noqa: E402
from core.captioning import DEFAULT_MODEL  # noqa: E402
from core.captioning.captioner import CaptionResult  # noqa: E402
from core.captioning.engine import (
    CaptionJobStats,  # noqa: E402
    commit_caption_batch,  # noqa: E402
)
from core.captioning.engine import select_pending_images as select_images  # noqa: E402
from core.captioning.job_spec import CaptionJobSpec, GenerationSettings  # noqa: E402
from core.captioning.registry import ResolvedModel  # noqa: E402
from core.library import Library  # noqa: E402
from core.models import Caption, CaptionSource, ImageState, utcnow  # noqa: E402
from core.queries import ImageFilter, count_filtered, filtered_ids  # noqa: E402
from core.scanner import recheck_errors  # noqa: E402
from core.view_rows import fetch_rows, folder_tree  # noqa: E402

#: Captions bulk-inserted per transaction between the two measured phases.
BULK_CHUNK = 50_000

# A BLIP-like caption vocabulary: short sentences from a few hundred words, so the FTS
# index has a realistic number of distinct terms and long posting lists.
_ADJ = ("red blue green white black yellow small large old young wooden little tall empty busy "
        "brown orange pink purple grey dark bright sandy snowy rocky grassy").split()
_NOUN = ("man woman child boy girl dog cat horse bird cow sheep car bus truck bicycle motorcycle train "
         "boat plane street road building house church tower bridge river lake beach ocean mountain "
         "hill forest tree field garden park table chair bed couch kitchen room window door wall sign "
         "clock umbrella kite surfboard skateboard pizza cake sandwich plate bowl cup bottle laptop phone "
         "book flower vase fence bench crowd group people player ball frisbee snow sky sunset city "
         "market shop restaurant desk computer camera painting statue fountain rock wave boardwalk "
         "harbor castle stairs path trail lamp mirror sink toilet bathroom shelf basket box bag hat").split()
_VERB = ("standing sitting walking running riding holding playing eating looking lying flying parked "
         "driving swimming sleeping jumping waiting crossing climbing carrying throwing").split()
_PREP = "on in next to near under in front of behind at with along across over".split()


def caption_texts(count: int, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    texts = []
    for _ in range(count):
        words = ["a", rnd.choice(_ADJ), rnd.choice(_NOUN), rnd.choice(_VERB), rnd.choice(_PREP)]
        words += ["a", rnd.choice(_ADJ), rnd.choice(_NOUN)]
        if rnd.random() < 0.4:
            words += [rnd.choice(_PREP), "the", rnd.choice(_NOUN)]
        texts.append(" ".join(words))
    return texts


def rel_path(i: int) -> str:
    """Camera-like layout: 20 year folders of 50,000 photos, in day folders of 500."""
    return f"{2005 + i // 50_000}/{(i // 500) % 100:03d}/IMG_{i:07d}.jpg"


def image_row(i: int, root_id: int) -> dict[str, object]:
    """The columns ``core.scan_files.describe_file`` (+ ``visit``) produce for a new JPEG."""
    digest = hashlib.sha1(i.to_bytes(8, "little")).hexdigest()
    return {
        "size": 4_000_000 + (i * 7919) % 4_000_000,
        "mtime_ns": 1_600_000_000_000_000_000 + i * 1_000_000_007,
        "width": 4000,
        "height": 3000,
        "format": "JPEG",
        "state": ImageState.OK.value,
        "error": None,
        "split_key": hashlib.sha1(digest.encode()).hexdigest(),
        "fingerprint": digest,
        "root_id": root_id,
        "rel_path": rel_path(i),
    }


def provenance() -> dict[str, Any]:
    """The engine's per-caption provenance dict for a GPU run of the default model."""
    return {
        "generation": GenerationSettings().to_dict(),
        "identity": {
            "model": DEFAULT_MODEL, "revision": "82a1e4c1a2e26e2bbdc0b1bd1e4e9f0a5c9d2e31", "adapter": None,
            "device": "cuda:0", "dtype": "bfloat16", "family": "blip", "optimizations": ["sdpa", "half"],
        },
        "device": "cuda:0",
        "dtype": "torch.bfloat16",
    }


def file_sizes(path: Path) -> tuple[int, int]:
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size, wal.stat().st_size if wal.exists() else 0


def peak_mb(fn: Callable[[], Any]) -> float:
    """Peak Python memory (tracemalloc) of one more call of *fn*, in MB."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


class Bench:
    def __init__(self, library: Library, root_id: int, root_path: Path, texts: list[str], repeat: int) -> None:
        self.library = library
        self.root_id = root_id
        self.root_path = root_path
        self.texts = texts
        self.repeat = repeat
        self.results: dict[str, dict[str, float]] = {}
        self.notes: dict[str, str] = {}
        self.images = 0
        self.prov = provenance()
        self.resolved = ResolvedModel(DEFAULT_MODEL, None, None)
        self.scores = random.Random(11)

    def record(self, phase: str, name: str, value: float) -> None:
        self.results.setdefault(name, {})[phase] = value

    # -- writes -----------------------------------------------------------------------

    def add_images(self, count: int) -> float:
        """Insert *count* new images through the scanner's insert path; rows/s."""
        stats = scanner.ScanStats()
        scan = scanner._RootScan(self.library.db, self.root_id, self.root_path, stats)
        start = time.perf_counter()
        for i in range(self.images, self.images + count):
            scan.inserts.append(image_row(i, self.root_id))
            if scan.pending >= scanner.BATCH_SIZE:
                scan.flush()
        scan.flush()
        seconds = time.perf_counter() - start
        self.images += count
        return count / seconds

    def engine_commits(self, first_id: int, count: int, batch: int) -> tuple[float, float]:
        """Caption images first_id.. through the engine's per-batch commit + job save.

        Returns (captions/s, ms per batch)."""
        with self.library.job("caption", {"model": DEFAULT_MODEL, "benchmark": True}, CaptionJobStats()) as run:
            stats = run.stats
            start = time.perf_counter()
            batches = 0
            for lo in range(first_id, first_id + count, batch):
                ids = list(range(lo, min(lo + batch, first_id + count)))
                results = [CaptionResult(self.texts[i - 1], -self.scores.uniform(0.05, 2.5)) for i in ids]
                commit_caption_batch(self.library, ids, results, [], self.resolved, self.prov, stats)
                run.save(done=stats.captioned + stats.errors, checkpoint=stats.counts())
                batches += 1
            seconds = time.perf_counter() - start
        assert stats.captioned == count, stats
        return count / seconds, 1000 * seconds / batches

    def engine_phase(self, phase: str, first_id: int, count: int) -> None:
        """3/4 of *count* in the engine's default batch (8), the rest in batches of 64."""
        default = CaptionJobSpec().batch_size
        small = count * 3 // 4
        rate, ms = self.engine_commits(first_id, small, default)
        self.record(phase, f"caption commits, batch {default} (engine path) captions/s", rate)
        self.record(phase, f"caption commits: ms per batch of {default} (+ job save)", ms)
        rate, ms = self.engine_commits(first_id + small, count - small, 64)
        self.record(phase, "caption commits, batch 64 (engine path) captions/s", rate)
        self.record(phase, "caption commits: ms per batch of 64 (+ job save)", ms)

    def bulk_captions(self, first_id: int, count: int) -> float:
        """The same caption rows, inserted in big transactions; rows/s."""
        start = time.perf_counter()
        for lo in range(first_id, first_id + count, BULK_CHUNK):
            rows = [
                {
                    "image_id": i, "text": self.texts[i - 1], "source": CaptionSource.MODEL.value,
                    "is_current": True, "model_name": self.resolved.model_name, "adapter": None,
                    "model_version_id": None, "provenance": self.prov,
                    "score": -self.scores.uniform(0.05, 2.5), "created_at": utcnow(),
                }
                for i in range(lo, min(lo + BULK_CHUNK, first_id + count))
            ]
            with self.library.db.write() as session:
                session.execute(insert(Caption), rows)
            done = min(lo + BULK_CHUNK, first_id + count) - first_id
            print(f"  bulk captions: {done:,}/{count:,} ({time.perf_counter() - start:.0f} s)", flush=True)
        return count / (time.perf_counter() - start)

    # -- reads ------------------------------------------------------------------------

    def timed(self, phase: str, name: str, fn: Callable[[], Any]) -> Any:
        times = []
        result = None
        for _ in range(self.repeat):
            start = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - start)
        self.record(phase, name, statistics.median(times))
        return result

    def queries(self, phase: str) -> None:
        db = self.library.db
        lib = self.library

        def ids(flt: ImageFilter) -> Callable[[], int]:
            def run() -> int:
                with db.read() as session:
                    return len(filtered_ids(session, flt))
            return run

        def count(flt: ImageFilter) -> Callable[[], int]:
            def run() -> int:
                with db.read() as session:
                    return count_filtered(session, flt)
            return run

        grid_all = ImageFilter()
        n = self.timed(phase, "grid ids: all, by name", ids(grid_all))
        self.notes["grid ids: all, by name"] = f"{n:,} ids"
        self.timed(phase, "grid ids: all, by date", ids(grid_all.with_(sort="date", descending=True)))
        self.timed(phase, "grid ids: review queue (model, by score)",
                   ids(ImageFilter(states=frozenset({"model"}), sort="confidence")))
        self.timed(phase, "grid ids: uncaptioned", ids(ImageFilter(states=frozenset({"uncaptioned"}))))
        folder = ImageFilter(root_id=self.root_id, folder="2005/")
        n = self.timed(phase, "grid ids: one year folder", ids(folder))
        self.notes["grid ids: one year folder"] = f"{n:,} ids"
        search = ImageFilter(text="dog beach")
        n = self.timed(phase, "text search 'dog beach' (ids)", ids(search))
        self.notes["text search 'dog beach' (ids)"] = f"{n:,} hits"
        n = self.timed(phase, "text search 'sunset' (count)", count(ImageFilter(text="sunset")))
        self.notes["text search 'sunset' (count)"] = f"{n:,} hits"
        self.timed(phase, "Library.status()", lib.status)

        def tree() -> int:
            with db.read() as session:
                return len(folder_tree(session))
        self.timed(phase, "folder tree (sidebar)", tree)

        chunk_ids = list(range(max(1, self.images // 2), max(1, self.images // 2) + 200))

        def chunk() -> int:
            with db.read() as session:
                return len(fetch_rows(session, chunk_ids))
        self.timed(phase, "grid chunk: fetch_rows(200)", chunk)

        def resume_selection() -> int:
            recheck_errors(db)
            selected, _skipped = select_images(lib, CaptionJobSpec(), self.resolved)
            return len(selected)
        n = self.timed(phase, "caption job selection: resume (same model)", resume_selection)
        self.notes["caption job selection: resume (same model)"] = f"{n:,} selected"

        other = ResolvedModel("Salesforce/blip-image-captioning-large", None, None)

        def new_model_selection() -> int:
            selected, _skipped = select_images(lib, CaptionJobSpec(model=other.model_name), other)
            return len(selected)
        n = self.timed(phase, "caption job selection: new model (all)", new_model_selection)
        self.notes["caption job selection: new model (all)"] = (
            f"{n:,} selected; Python peak {peak_mb(new_model_selection):,.0f} MB")

        def rescan_db_side() -> int:
            scan = scanner._RootScan(db, self.root_id, self.root_path, scanner.ScanStats())
            return len(scan.known)
        known = self.timed(phase, "rescan, DB side: load known records", rescan_db_side)
        self.notes["rescan, DB side: load known records"] = (
            f"{known:,} rows; Python peak {peak_mb(rescan_db_side):,.0f} MB")

    def sizes(self, phase: str) -> dict[str, int]:
        path = self.library.path
        db_bytes, wal_bytes = file_sizes(path)
        self.record(phase, "file: .db MB", db_bytes / 1e6)
        self.record(phase, "file: -wal MB (before checkpoint)", wal_bytes / 1e6)
        self.record(phase, "file: (.db + -wal) bytes per image", (db_bytes + wal_bytes) / max(1, self.images))
        conn = sqlite3.connect(path)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            per_object = dict(conn.execute(
                "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall())
        finally:
            conn.close()
        db_bytes, _ = file_sizes(path)
        self.record(phase, "file: .db MB after checkpoint", db_bytes / 1e6)
        return per_object


def set_cache_size(library: Library, megabytes: int) -> None:
    """Give every connection of *library* a page cache of *megabytes* (an experiment)."""
    from sqlalchemy import event

    def on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA cache_size = {-megabytes * 1024}")

    event.listen(library.db.engine, "connect", on_connect)
    library.db.engine.dispose()  # pooled connections reconnect with the pragma


def fmt(value: float | None, name: str) -> str:
    if value is None:
        return "-"
    if "MB" in name or "bytes" in name or "/s" in name or "ms" in name:
        return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
    return f"{value * 1000:,.1f} ms" if value < 10 else f"{value:,.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1_000_000, help="library size (default 1,000,000)")
    parser.add_argument("--measure", type=int, default=10_000,
                        help="images captioned through the engine's commit at the start and at full size")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each query (median)")
    parser.add_argument("--keep", type=Path, help="copy the finished library file here")
    parser.add_argument("--cache-mb", type=int,
                        help="experiment: PRAGMA cache_size of every connection in MB (CaptionDesk leaves "
                             "SQLite's default, 2 MB)")
    args = parser.parse_args()
    if args.images < 3 * args.measure:
        parser.error("--images must be at least 3 x --measure")
    started = time.perf_counter()
    texts = caption_texts(args.images)

    with tempfile.TemporaryDirectory(prefix="cd-scale-") as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        library = Library(Path(tmp) / "scale.db")
        if args.cache_mb:
            set_cache_size(library, args.cache_mb)
        root = library.add_root(photos)
        bench = Bench(library, root.id, photos, texts, args.repeat)
        m = args.measure

        print(f"start: {m:,} images via the scanner's insert path, {m:,} captions via the engine's commit",
              flush=True)
        bench.record("start", "image inserts (scanner path) rows/s", bench.add_images(m))
        bench.engine_phase("start", 1, m)
        bench.queries("start")
        start_objects = bench.sizes("start")

        print(f"growing to {args.images:,} images...", flush=True)
        t = time.perf_counter()
        rest = args.images - m
        bench.add_images(rest - m)
        # The rate of the last m inserts, into a table that already holds the rest.
        bench.record("full", "image inserts (scanner path) rows/s", bench.add_images(m))
        build_images = time.perf_counter() - t
        print(f"  images inserted in {build_images:.0f} s", flush=True)
        t = time.perf_counter()
        bulk_rate = bench.bulk_captions(m + 1, args.images - 2 * m)
        build_captions = time.perf_counter() - t
        bench.engine_phase("full", args.images - m + 1, m)
        print("queries at full size...", flush=True)
        bench.queries("full")
        full_objects = bench.sizes("full")
        if args.keep:
            shutil.copyfile(library.path, args.keep)
        library.close()

    total = time.perf_counter() - started
    print()
    if args.cache_mb:
        print(f"experiment: PRAGMA cache_size = {args.cache_mb} MB on every connection")
    print(f"library: {args.images:,} images, {args.images:,} model captions (one per image); "
          f"start = {m:,} images + {m:,} captions")
    print(f"{'measure':<52}{'start':>12}{'full':>12}{'full/start':>11}  note")
    for name, values in bench.results.items():
        a, b = values.get("start"), values.get("full")
        ratio = f"{b / a:.2f}" if a and b is not None else "-"
        print(f"{name:<52}{fmt(a, name):>12}{fmt(b, name):>12}{ratio:>11}  {bench.notes.get(name, '')}")
    print()
    print("size per table/index at full size (dbstat, after checkpoint):")
    for name, size in full_objects.items():
        if size >= 1_000_000:
            print(f"  {name:<36}{size / 1e6:>10,.1f} MB {size / args.images:>8.1f} B/image"
                  f"   (start {start_objects.get(name, 0) / 1e6:,.1f} MB)")
    print()
    print(f"bulk caption inserts (same rows, {BULK_CHUNK:,}/transaction): {bulk_rate:,.0f} rows/s; "
          f"images phase {build_images:.0f} s, captions phase {build_captions:.0f} s")
    print(f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs")
    print(f"benchmark took {total:.0f} s ({total / 60:.1f} min)")


if __name__ == "__main__":
    main()
