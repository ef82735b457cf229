"""Search through the Store protocol on 100k documents: FAISS (Flat, HNSW32) against Milvus
(FLAT, HNSW, and IVF_FLAT, the embedded engine's approximate index), at 384 and 128 dims.

    nice -n 10 .venv/bin/python bench/store_engines.py --n-docs 100000 --dims 384,128

Per engine: insert rate, QPS with batches of `--batch` queries and with single queries, and
recall@10 against exact brute force (float64 numpy), all in one run on one machine. Milvus runs
as the embedded engine (milvus-lite) in this process's server; an index type it cannot build is
reported as such. Vectors are clustered unit vectors (1000 Gaussian clusters; queries are noisy
copies of stored documents), closer to sentence embeddings than uniform noise, which no
approximate index handles well. FAISS runs on `--faiss-threads` OpenMP threads (1 by default: on
a shared, oversubscribed machine OpenMP's spinning made a 2-thread Flat search hundreds of times
slower than 1 thread).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

from baihua.index import FaissStore, Store

INSERT_CHUNK = 5000


def clustered(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.standard_normal((1000, dim))
    x = centres[rng.integers(0, 1000, n)] + 0.6 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def engines(dim: int, where: Path) -> dict[str, Callable[[], Store]]:
    from baihua.index.milvus_store import MilvusStore

    def milvus(index_type: str, build: dict, search: dict) -> Callable[[], Store]:
        return lambda: MilvusStore(
            str(where / f"milvus-{index_type}.db"),
            dim,
            index_type=index_type,
            index_params=build,
            search_params=search,
        )

    return {
        "FAISS Flat": lambda: FaissStore.open(where / "faiss-flat", dim, "Flat"),
        "FAISS HNSW32 (efSearch=64)": lambda: FaissStore.open(
            where / "faiss-hnsw", dim, "HNSW32", search_params="efSearch=64"
        ),
        "Milvus FLAT": milvus("FLAT", {}, {}),
        "Milvus HNSW (M=32, ef=64)": milvus("HNSW", {"M": 32, "efConstruction": 40}, {"ef": 64}),
        "Milvus IVF_FLAT (nlist=1024, nprobe=32)": milvus(
            "IVF_FLAT", {"nlist": 1024}, {"nprobe": 32}
        ),
    }


def recall_at_10(store: Store, queries: np.ndarray, truth: np.ndarray) -> float:
    found = store.search(queries, 10)
    hits = [len({h.id for h in row} & set(t)) for row, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / 10


def measure(
    store: Store, docs: np.ndarray, queries: np.ndarray, truth: np.ndarray, batch: int, single: int
) -> dict[str, float]:
    start = time.perf_counter()
    for lo in range(0, len(docs), INSERT_CHUNK):
        ids = np.arange(lo, min(lo + INSERT_CHUNK, len(docs)))
        store.add(ids, docs[ids], [f"doc {i}" for i in ids.tolist()])
    store.save()
    insert_s = time.perf_counter() - start
    store.search(queries[:batch], 10)  # warm-up (Milvus loads segments, FAISS pages in)
    start = time.perf_counter()
    for lo in range(0, len(queries), batch):
        store.search(queries[lo : lo + batch], 10)
    batched_qps = len(queries) / (time.perf_counter() - start)
    start = time.perf_counter()
    for query in queries[:single]:
        store.search(query[None], 10)
    single_qps = single / (time.perf_counter() - start)
    return {
        "insert_docs_per_s": len(docs) / insert_s,
        "batched_qps": batched_qps,
        "single_qps": single_qps,
        "recall_at_10": recall_at_10(store, queries, truth),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-docs", type=int, default=100_000)
    parser.add_argument("--dims", default="384,128")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--single", type=int, default=200)
    parser.add_argument("--faiss-threads", type=int, default=1)
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.faiss_threads)
    rng = np.random.default_rng(0)
    batched = f"QPS (batches of {args.batch})"
    print(f"| dim | engine | insert docs/s | {batched} | QPS (single) | recall@10 |")
    print("|---|---|---|---|---|---|")
    for dim in (int(d) for d in args.dims.split(",")):
        docs = clustered(args.n_docs, dim, rng)
        picks = rng.integers(0, args.n_docs, args.queries)
        noisy = docs[picks] + 0.1 * rng.standard_normal((args.queries, dim)).astype(np.float32)
        queries = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)
        scores = queries.astype(np.float64) @ docs.astype(np.float64).T
        truth = np.argsort(-scores, axis=1)[:, :10]
        with tempfile.TemporaryDirectory() as tmp:
            for name, open_store in engines(dim, Path(tmp)).items():
                try:
                    store = open_store()
                except Exception as error:  # noqa: BLE001 - reported as a row
                    reason = str(error).splitlines()[0][:120]
                    print(f"| {dim} | {name} | not available: {reason} | | | |")
                    continue
                try:
                    r = measure(store, docs, queries, truth, args.batch, args.single)
                finally:
                    store.close()
                print(
                    f"| {dim} | {name} | {r['insert_docs_per_s']:,.0f} | {r['batched_qps']:,.0f} "
                    f"| {r['single_qps']:,.0f} | {r['recall_at_10']:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
