"""Three costs of the FAISS store that grow with its size (issue 23), measured through the Store
protocol on one store of clustered unit vectors:

    nice -n 10 .venv/bin/python bench/faiss_costs.py --n-docs 100000 --dim 128

- concurrent single-query searches: p50/p99 of one-query searches from `--clients` threads at
  once (the service's request threads), against the same searches from one thread;
- filtered search: p50 with filters keeping 1 %, 10 % and 50 % of the documents (a payload
  field `bucket` in 0..99), as a ratio to the unfiltered p50 of the same queries;
- a snapshot under load: two threads search and one writes a document every 20 ms while
  `save()` runs; the longest search and write in that window against the save's duration and
  against the longest in the 2 s before it (what the machine's load alone does);
- start-up: open after a clean close, and after 100 writes that the last snapshot lacks (a
  close without `save()`, which leaves the index files as kill -9 does).

Only the Store protocol is used, so the same file runs on an older checkout for a before/after
pair in one sitting (copy it there and run it with that checkout's venv).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from store_engines import clustered

from baihua.index import FaissStore

CHUNK = 10_000


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.array(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def timed_searches(store: FaissStore, queries: np.ndarray, **kwargs: object) -> list[float]:
    times = []
    for query in queries:
        start = time.perf_counter()
        store.search(query[None], 10, **kwargs)  # type: ignore[arg-type]
        times.append(time.perf_counter() - start)
    return times


def concurrent(store: FaissStore, queries: np.ndarray, clients: int) -> list[float]:
    def one(query: np.ndarray) -> float:
        start = time.perf_counter()
        store.search(query[None], 10)
        return time.perf_counter() - start

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, queries))


def snapshot_under_load(store: FaissStore, queries: np.ndarray, dim: int) -> dict[str, float]:
    """Longest search and write while `save()` runs, with searches and writes going on."""
    rng = np.random.default_rng(7)
    stop = threading.Event()
    window: list[float] = []  # save start, save end
    searches: list[tuple[float, float]] = []
    writes: list[tuple[float, float]] = []

    def searcher(seed: int) -> None:
        i = seed
        while not stop.is_set():
            start = time.perf_counter()
            store.search(queries[i % len(queries)][None], 10)
            searches.append((start, time.perf_counter()))
            i += 2

    def writer() -> None:
        new_id = len(store) + 10**9
        while not stop.is_set():
            start = time.perf_counter()
            store.add([new_id], clustered(1, dim, rng), ["w"], [{"bucket": 0}])
            new_id += 1
            writes.append((start, time.perf_counter()))
            time.sleep(0.02)

    threads = [threading.Thread(target=searcher, args=(s,)) for s in (0, 1)]
    threads.append(threading.Thread(target=writer))
    for thread in threads:
        thread.start()
    time.sleep(2.5)
    window.append(time.perf_counter())
    store.save()
    window.append(time.perf_counter())
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join()

    def longest(spans: list[tuple[float, float]], begin: float, end: float) -> float:
        inside = [b - a for a, b in spans if b >= begin and a <= end]
        return 1000 * max(inside, default=0.0)

    before = (window[0] - 2.0, window[0] - 0.001)
    return {
        "save_ms": 1000 * (window[1] - window[0]),
        "longest_search_ms": longest(searches, *window),
        "longest_write_ms": longest(writes, *window),
        "before_search_ms": longest(searches, *before),
        "before_write_ms": longest(writes, *before),
    }


def reopen_times(path: Path, dim: int, factory: str) -> dict[str, float]:
    """Seconds to open after a clean close, and with the snapshot 100 writes behind."""
    start = time.perf_counter()
    store = FaissStore.open(path, dim, factory)
    clean = time.perf_counter() - start
    extra = clustered(100, dim, np.random.default_rng(11))
    store.add(np.arange(2 * 10**9, 2 * 10**9 + 100), extra, ["x"] * 100)
    store.close()
    start = time.perf_counter()
    FaissStore.open(path, dim, factory).close()
    return {"open_clean_s": clean, "open_behind_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-docs", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--factories", default="Flat,HNSW32")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = clustered(args.n_docs, args.dim, rng)
    buckets = rng.integers(0, 100, args.n_docs)
    queries = vectors[rng.integers(0, args.n_docs, args.queries)]
    queries = queries + 0.05 * rng.standard_normal(queries.shape).astype(np.float32)
    rows = []
    for factory in args.factories.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            store = FaissStore.open(Path(tmp) / "store", args.dim, factory)
            start = time.perf_counter()
            for at in range(0, args.n_docs, CHUNK):
                part = slice(at, at + CHUNK)
                store.add(
                    np.arange(at, min(at + CHUNK, args.n_docs)),
                    vectors[part],
                    ["t"] * len(vectors[part]),
                    [{"bucket": int(b)} for b in buckets[part]],
                )
            load_s = time.perf_counter() - start
            one_thread = percentiles(timed_searches(store, queries))
            many = percentiles(concurrent(store, np.repeat(queries, 4, axis=0), args.clients))
            filtered = {
                share: statistics.median(
                    timed_searches(store, queries, filter={"bucket": {"$lt": share}})
                )
                * 1000
                for share in (1, 10, 50)
            }
            stall = snapshot_under_load(store, queries, args.dim)
            store.save()  # the writes that came after the measured save
            store.close()
            opening = reopen_times(Path(tmp) / "store", args.dim, factory)
        rows.append((factory, load_s, one_thread, many, filtered, stall | opening))
        print(f"{factory}: loaded in {load_s:.1f} s", flush=True)

    print(f"\n{args.n_docs} documents x {args.dim} dims; times in ms")
    print(
        "| factory | 1 thread p50 / p99 | "
        f"{args.clients} threads p50 / p99 | filtered 1 % / 10 % / 50 % p50 "
        "(× unfiltered) | save | longest search / write during save | the same in the 2 s "
        "before | open clean / 100 writes behind (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for factory, _, one, many, filtered, stall in rows:
        ratios = " / ".join(f"{filtered[s]:.2f} ({filtered[s] / one[0]:.1f}×)" for s in filtered)
        print(
            f"| {factory} | {one[0]:.2f} / {one[1]:.2f} | {many[0]:.2f} / {many[1]:.2f} | "
            f"{ratios} | {stall['save_ms']:.0f} | "
            f"{stall['longest_search_ms']:.0f} / {stall['longest_write_ms']:.0f} | "
            f"{stall['before_search_ms']:.0f} / {stall['before_write_ms']:.0f} | "
            f"{stall['open_clean_s']:.2f} / {stall['open_behind_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
