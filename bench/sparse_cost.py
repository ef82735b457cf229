"""What the BM25 index costs at 100k documents, and each /search mode's latency through the
service.

    nice -n 10 .venv/bin/python bench/sparse_cost.py --data-dir DATA/senteval_cn --n-docs 100000

Documents: the distinct sentences of the STS task files (text1 and text2 of every split), in file
order, up to ``--n-docs`` (100,000 needs every file of senteval_cn); queries: ``--n-queries``
other sentences of the same files.

1. The index alone, in this process: segmenting + building it; a merge alone (what a large
   write batch starts); what searches and writes wait while a merge runs (one thread merges,
   this one searches and writes until it is done: each call's latency and how many completed
   meanwhile); a save (the data file's bytes); a reopen (the content digest of the stored texts,
   then the load); each mode's search step alone (FAISS Flat of ``--dim`` random unit vectors,
   one thread; BM25; both plus the weighted fusion of 50 candidates a side).
2. The service (``--service``): a data directory holding a FAISS Flat store of the same
   documents with random unit vectors of the model's dimension as their vectors (encoding 100k
   documents would only measure the encoder again; a Flat search's time does not depend on the
   vectors' content) and the saved BM25 index; ``baihua serve`` on it (ready time: the model, the
   store, and the BM25 index reopened); then ``POST /search`` with each ``mode``, one client,
   one query per request, top 10: p50/p99 per mode, including the encoding of the query by the
   real model (dense and hybrid) and the HTTP round trip. Hybrid fuses 50 candidates a side
   (weighted 0.5, the default).

Run with another checkout's interpreter (its ``baihua``) to measure that version: what it lacks
(background merges) is skipped or measured as it behaves.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import httpx
import numpy as np

from baihua.encoder import l2_normalize
from baihua.eval.datasets import load_task, task_names
from baihua.index import FaissStore
from baihua.index.fusion import Fusion, fuse
from baihua.index.segment import Segmenter
from baihua.index.sparse import SparseIndex


def sentences(data_dir: Path) -> list[str]:
    seen: dict[str, None] = {}
    for name in task_names(data_dir):
        for split in load_task(data_dir, name).splits.values():
            seen.update(dict.fromkeys(split.text1))
            seen.update(dict.fromkeys(split.text2))
    return list(seen)


def percentiles(seconds: list[float]) -> str:
    if not seconds:
        return "none"
    ms = np.array(seconds) * 1000
    p50, p99 = np.percentile(ms, [50, 99])
    return f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {ms.max():.2f} ms (n={len(ms)})"


def timed(call: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    call(*args)
    return time.perf_counter() - start


def during_a_merge(index: SparseIndex, docs: list[str], queries: list[str]) -> None:
    """Merge in a thread; meanwhile search and write here, one call after the other."""
    first = len(docs) + 1
    index.upsert([first], ["合并前写入的一句话"])  # something to merge
    merger = threading.Thread(target=index.merge)
    searches: list[float] = []
    writes: list[float] = []
    start = time.perf_counter()
    merger.start()
    time.sleep(0.05)  # let the merge take its snapshot (or, before background merges, the lock)
    for n in itertools.count():
        if not merger.is_alive():
            break
        searches.append(timed(index.search, queries[n % len(queries)], 50))
        if not merger.is_alive():
            break
        writes.append(timed(index.upsert, [first + 1 + n], [queries[n % len(queries)]]))
    merger.join()
    print(f"merge in a thread: {time.perf_counter() - start:.2f} s")
    print(f"  searches meanwhile: {percentiles(searches)}")
    print(f"  writes meanwhile (1 document each): {percentiles(writes)}")
    index.delete(range(first, first + 2 + len(writes)))


def index_costs(
    docs: list[str], queries: list[str], folder: Path, segmenter: Segmenter
) -> SparseIndex:
    folder.mkdir(parents=True, exist_ok=True)
    index = SparseIndex(segmenter, path=folder)
    print(f"segment + build: {timed(lambda: index.rebuild(enumerate(docs))):.1f} s")
    index.upsert([len(docs)], ["触发一次合并"])
    print(f"merge alone: {timed(index.merge):.2f} s")
    index.delete([len(docs)])
    during_a_merge(index, docs, queries)
    index.merge()
    print(f"save: {timed(index.save):.2f} s")
    saved = sum(f.stat().st_size for f in folder.iterdir())
    print(f"  {saved} bytes on disk")
    reopen = timed(lambda: SparseIndex.open(folder, segmenter, documents=lambda: enumerate(docs)))
    print(f"reopen (digest of the texts + load): {reopen:.2f} s")
    return index


def search(http: httpx.Client, body: dict[str, object]) -> None:
    http.post("/search", json=body).raise_for_status()


def index_only_modes(index: SparseIndex, queries: list[str], dim: int, depth: int = 50) -> None:
    """Each mode's search step without the service: a FAISS Flat search (one thread, random
    unit vectors, one query at a time), the BM25 search, and both plus the weighted fusion."""
    rng = np.random.default_rng(0)
    n = len(index)
    flat = faiss.IndexFlatIP(dim)
    flat.add(l2_normalize(rng.standard_normal((n, dim)).astype(np.float32)))
    print(f"FAISS Flat {n} x {dim}: {flat.ntotal * dim * 4} bytes of vectors")
    vectors = l2_normalize(rng.standard_normal((len(queries), dim)).astype(np.float32))
    timings: dict[str, list[float]] = {"dense": [], "sparse": [], "hybrid": []}
    fusion = Fusion("weighted", weight=0.5)
    for text, vector in zip(queries, vectors, strict=True):
        start = time.perf_counter()
        scores, ids = flat.search(vector[None], depth)
        dense_s = time.perf_counter() - start
        start = time.perf_counter()
        hits = index.search(text, depth)
        sparse_s = time.perf_counter() - start
        start = time.perf_counter()
        dense = list(zip(ids[0].tolist(), scores[0].tolist(), strict=True))
        fuse(dense, [(h.id, h.score) for h in hits], fusion, 10)
        fuse_s = time.perf_counter() - start
        timings["dense"].append(dense_s)
        timings["sparse"].append(sparse_s)
        timings["hybrid"].append(dense_s + sparse_s + fuse_s)
    for mode, seconds in timings.items():
        print(f"index only, {mode}: {percentiles(seconds)}")


def service_costs(
    docs: list[str], queries: list[str], sparse_folder: Path, data_dir: Path, model: str
) -> None:
    from baihua.serving.components import build_encoder
    from baihua.serving.settings import load_settings
    from serving import free_port, start_server, wait_ready

    dim = build_encoder(load_settings(model=model)).dim
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    with FaissStore.open(data_dir / "index", dim=dim) as store:
        for first in range(0, len(docs), 10_000):
            ids = np.arange(first, min(first + 10_000, len(docs)))
            vectors = l2_normalize(rng.standard_normal((len(ids), dim)).astype(np.float32))
            store.add(ids, vectors, [docs[i] for i in ids])
        store.save()
    print(f"FAISS store of {len(docs)} x {dim}: {time.perf_counter() - start:.1f} s to fill")
    shutil.copytree(sparse_folder, data_dir / "sparse")
    faiss_bytes = sum(f.stat().st_size for f in (data_dir / "index").rglob("*") if f.is_file())
    print(f"  FAISS store directory: {faiss_bytes} bytes")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    server = start_server(port, data_dir, "--model", model)
    try:
        wait_ready(url, server, timeout=1800)
        print(f"baihua serve ready after {time.perf_counter() - start:.1f} s")
        with httpx.Client(base_url=url, timeout=120) as http:
            for mode in ("sparse", "dense", "hybrid"):
                body = {"top_k": 10, "mode": mode}
                for query in queries[:5]:  # warm-up
                    http.post("/search", json={**body, "query": query}).raise_for_status()
                seconds = [timed(search, http, {**body, "query": query}) for query in queries]
                print(f"POST /search mode {mode}: {percentiles(seconds)}")
    finally:
        server.terminate()
        server.wait(timeout=600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--n-docs", type=int, default=100_000)
    parser.add_argument("--n-queries", type=int, default=300)
    parser.add_argument("--service", action="store_true", help="also measure through the server")
    parser.add_argument("--model", default="me5-small")
    parser.add_argument("--dim", type=int, default=384, help="of the index-only FAISS search")
    args = parser.parse_args()

    texts = sentences(args.data_dir)
    docs, queries = texts[: args.n_docs], texts[args.n_docs : args.n_docs + args.n_queries]
    print(f"{len(docs)} documents, {len(queries)} queries")
    segmenter = Segmenter()
    segmenter("预热")
    with tempfile.TemporaryDirectory() as folder:
        index = index_costs(docs, queries, Path(folder) / "sparse", segmenter)
        faiss.omp_set_num_threads(1)
        index_only_modes(index, queries, args.dim)
        faiss.omp_set_num_threads(0)
        if args.service:
            service_costs(docs, queries, Path(folder) / "sparse", Path(folder) / "data", args.model)


if __name__ == "__main__":
    main()
