"""Where search-by-meaning vectors should live: build rate, query latency, memory, file size.

Random unit vectors (384 dims, all-MiniLM-L6-v2's size; no model is loaded) at each size:

* **chosen — BLOB table + numpy**: the library's own ``embeddings`` table written through
  ``core.search.store.write_vectors`` (one transaction per 10,000 rows, image rows made
  first), loaded once into a matrix (``stored_vectors``), queried through
  ``core.search.query.rank`` (matrix product, top 50, and the freshness check of those
  hits against the images table: what ``captiondesk search`` does after the model);
* **faiss-cpu IndexFlatIP** (exact, like the chosen store) in a file beside the library;
* **usearch HNSW** (approximate) in a file beside the library (``--usearch``; slow to build).

sqlite-vec (vectors in the library file itself) cannot be loaded by a Python whose sqlite3
has no ``enable_load_extension`` (this machine's build, like many distribution ones); the
run says so instead of measuring it.  Latency ratios are against the chosen store's own
numpy product at the same size.

    python benchmarks/search.py                       # 100,000 and 1,000,000 vectors
    python benchmarks/search.py --sizes 100000 --queries 200 --usearch
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.library import Library  # noqa: E402
from core.search.query import rank  # noqa: E402
from core.search.store import IMAGE_KIND, stored_vectors, write_vectors  # noqa: E402

DIM = 384
MODEL = "bench"
CHUNK = 10_000


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def percentiles(samples: list[float]) -> tuple[float, float]:
    ms = sorted(s * 1000 for s in samples)
    return statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))]


def timed(fn, queries: np.ndarray) -> list[float]:  # noqa: ANN001
    out = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        out.append(time.perf_counter() - t)
    return out


def bench_blob(folder: Path, vectors: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    n = len(vectors)
    library = Library(folder / "library.db")
    with sqlite3.connect(library.path) as conn:
        conn.execute("INSERT INTO library_roots (id, path, added_at) VALUES (1, '/bench', '2026-01-01')")
        conn.executemany(
            "INSERT INTO images (id, root_id, rel_path, size, mtime_ns, fingerprint, state, first_seen_at, "
            "last_seen_at) VALUES (?, 1, ?, 1, 1, ?, 'ok', '2026-01-01', '2026-01-01')",
            ((i + 1, f"p{i:07}.jpg", f"{i:040x}") for i in range(n)),
        )
    start = time.perf_counter()
    for s in range(0, n, CHUNK):
        items = [(i + 1, f"{i:040x}") for i in range(s, min(n, s + CHUNK))]
        with library.db.write() as session:
            write_vectors(session, MODEL, IMAGE_KIND, items, vectors[s:s + CHUNK])
    build = time.perf_counter() - start
    size = sum(p.stat().st_size for p in folder.glob("library.db*"))
    before = rss_mb()
    start = time.perf_counter()
    stored = stored_vectors(library, MODEL, "image")
    load = time.perf_counter() - start
    memory = rss_mb() - before
    raw = timed(lambda q: np.argpartition(-stored.scores(q), 49)[:50], queries)
    full = timed(lambda q: rank(library, MODEL, "image", q, limit=50), queries)
    assert len(rank(library, MODEL, "image", queries[0], limit=50)) == 50
    library.close()
    return {"build_per_s": n / build, "load_s": load, "memory_mb": memory, "file_mb": size / 2**20,
            "raw": percentiles(raw), "query": percentiles(full)}


def bench_faiss(folder: Path, vectors: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    import faiss

    before = rss_mb()
    start = time.perf_counter()
    index = faiss.IndexIDMap(faiss.IndexFlatIP(DIM))
    index.add_with_ids(vectors, np.arange(1, len(vectors) + 1, dtype=np.int64))
    faiss.write_index(index, str(folder / "vectors.faiss"))
    build = time.perf_counter() - start
    memory = rss_mb() - before
    lat = timed(lambda q: index.search(q[None, :], 50), queries)
    return {"build_per_s": len(vectors) / build, "load_s": float("nan"), "memory_mb": memory,
            "file_mb": (folder / "vectors.faiss").stat().st_size / 2**20, "query": percentiles(lat)}


def bench_usearch(folder: Path, vectors: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    from usearch.index import Index

    before = rss_mb()
    start = time.perf_counter()
    index = Index(ndim=DIM, metric="ip", dtype="f32")
    index.add(np.arange(1, len(vectors) + 1, dtype=np.uint64), vectors)
    index.save(str(folder / "vectors.usearch"))
    build = time.perf_counter() - start
    memory = rss_mb() - before
    lat = timed(lambda q: index.search(q, 50), queries)
    return {"build_per_s": len(vectors) / build, "load_s": float("nan"), "memory_mb": memory,
            "file_mb": (folder / "vectors.usearch").stat().st_size / 2**20, "query": percentiles(lat)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--usearch", action="store_true", help="also build a usearch HNSW index (slow)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{os.cpu_count()} CPUs; {DIM}-dim float32 unit vectors; top 50 per query")
    print("sqlite-vec:", "loadable" if hasattr(sqlite3.Connection, "enable_load_extension")
          else "not measured: this Python's sqlite3 cannot load extensions")
    for n in (int(s) for s in args.sizes.split(",")):
        vectors = unit(rng, n)
        queries = unit(rng, args.queries)
        rows = []
        with tempfile.TemporaryDirectory(prefix="search-bench-") as tmp:
            blob = bench_blob(Path(tmp), vectors, queries)
            rows.append(("BLOB table + numpy (chosen), full query", blob))
            rows.append(("  of which the numpy product + top 50", {**blob, "query": blob["raw"]}))
            rows.append(("faiss IndexFlatIP beside", bench_faiss(Path(tmp), vectors, queries)))
            if args.usearch:
                rows.append(("usearch HNSW beside", bench_usearch(Path(tmp), vectors, queries)))
        base = blob["raw"][0]
        print(f"\n{n:,} vectors")
        print(f"{'store':42} {'build/s':>9} {'load s':>7} {'RAM MB':>7} {'file MB':>8} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'p50 vs numpy':>12}")
        for name, r in rows:
            p50, p99 = r["query"]
            print(f"{name:42} {r['build_per_s']:9.0f} {r['load_s']:7.2f} {r['memory_mb']:7.0f} "
                  f"{r['file_mb']:8.0f} {p50:7.1f} {p99:7.1f} {p50 / base:11.2f}x")
        del vectors


if __name__ == "__main__":
    main()
