"""What the BM25 index costs at 100k documents, and each /search mode's latency per query.

    nice -n 10 .venv/bin/python bench/sparse_cost.py --data-dir DATA/senteval_cn --n-docs 100000

Documents: the distinct sentences of the STS task files (text1 and text2 of every split), in file
order, up to ``--n-docs``; queries: ``--n-queries`` other sentences of the same files. Reported:
segmenting + building the index, a merge alone (what a large write batch triggers), a save (the
data file's bytes), a reopen (loading the save), and per-query p50/p99 latency of sparse search,
of a dense FAISS Flat search (one query at a time, unit random vectors of ``--dim``: the FAISS
time does not depend on the vectors' content; the encoder's time is not included in any mode)
and of hybrid (both, plus the weighted fusion of ``--depth`` candidates each).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from baihua.eval.datasets import load_task, task_names
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
    ms = np.array(seconds) * 1000
    return f"p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--n-docs", type=int, default=100_000)
    parser.add_argument("--n-queries", type=int, default=500)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--depth", type=int, default=50)
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)

    texts = sentences(args.data_dir)
    docs, queries = texts[: args.n_docs], texts[args.n_docs : args.n_docs + args.n_queries]
    print(f"{len(docs)} documents, {len(queries)} queries")
    segmenter = Segmenter()
    segmenter("预热")
    with tempfile.TemporaryDirectory() as folder:
        index = SparseIndex(segmenter, path=Path(folder))
        start = time.perf_counter()
        index.rebuild(enumerate(docs))
        print(f"segment + build: {time.perf_counter() - start:.1f} s")
        index.upsert([len(docs)], ["触发一次合并"])
        start = time.perf_counter()
        index.merge()
        print(f"merge alone: {time.perf_counter() - start:.2f} s")
        start = time.perf_counter()
        index.save()
        saved = sum(f.stat().st_size for f in Path(folder).iterdir())
        print(f"save: {time.perf_counter() - start:.2f} s, {saved} bytes on disk")
        start = time.perf_counter()
        SparseIndex.open(
            Path(folder),
            segmenter,
            documents=lambda: [*enumerate(docs), (len(docs), "触发一次合并")],
        )
        print(f"reopen (digest of the texts + load): {time.perf_counter() - start:.2f} s")

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((len(docs), args.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(vectors)
    print(f"FAISS Flat: {flat.ntotal * args.dim * 4} bytes")
    query_vectors = vectors[rng.integers(0, len(docs), len(queries))]
    timings: dict[str, list[float]] = {"dense": [], "sparse": [], "hybrid": []}
    fusion = Fusion("weighted", weight=0.5)
    for text, vector in zip(queries, query_vectors, strict=True):
        start = time.perf_counter()
        scores, ids = flat.search(vector[None], args.depth)
        dense_s = time.perf_counter() - start
        start = time.perf_counter()
        hits = index.search(text, args.depth)
        sparse_s = time.perf_counter() - start
        start = time.perf_counter()
        dense = list(zip(ids[0].tolist(), scores[0].tolist(), strict=True))
        fuse(dense, [(h.id, h.score) for h in hits], fusion, 10)
        fuse_s = time.perf_counter() - start
        timings["dense"].append(dense_s)
        timings["sparse"].append(sparse_s)
        timings["hybrid"].append(dense_s + sparse_s + fuse_s)
    for mode, seconds in timings.items():
        print(f"{mode}: {percentiles(seconds)}")


if __name__ == "__main__":
    main()
