"""Geodesic re-ranking against plain search on one Flat index: queries per second of each, their
ratio (the target: geodesic costs at most 3× plain search at 36k documents), and the graph's
build time and bytes.

    .venv/bin/python bench/geodesic_batch.py --n 36000 --dim 128

Documents are clustered random unit vectors (``--clusters`` centres plus noise, so the kNN graph
has neighbourhoods to walk), queries noisy copies of documents. Plain: FAISS top ``--top-k`` per
query. Geodesic: FAISS top ``fetch_size(top_k)`` plus ``KnnGraph.rank_batch`` over them, in
batches of ``--batch`` queries, exactly as ``baihua eval-retrieval run --rerank geodesic``
times it. The two are timed alternately, ``--repeats`` times; medians.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import faiss
import numpy as np

from baihua.encoder import l2_normalize
from baihua.index.geodesic import KnnGraph, fetch_size


def clustered(n: int, dim: int, clusters: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    points = centres[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, dim))
    return l2_normalize(points.astype(np.float32))


def seconds(function: Callable[[], None]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=36_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--clusters", type=int, default=3000)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--queries", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--reach", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    docs = clustered(args.n, args.dim, args.clusters, args.noise, seed=0)
    rng = np.random.default_rng(1)
    picked = docs[rng.integers(0, args.n, args.queries)]
    queries = l2_normalize(picked + 0.3 * rng.standard_normal(picked.shape).astype(np.float32))
    index = faiss.IndexFlatIP(args.dim)
    index.add(docs)

    start = time.perf_counter()
    graph = KnnGraph.build(np.arange(args.n), docs, args.k, reach=args.reach)
    build = time.perf_counter() - start
    fetch = fetch_size(args.top_k)
    batches = [queries[i : i + args.batch] for i in range(0, args.queries, args.batch)]

    def plain() -> None:
        for batch in batches:
            index.search(batch, args.top_k)

    def geodesic() -> None:
        for batch in batches:
            scores, found = index.search(batch, fetch)
            graph.rank_batch(found, scores, args.top_k)

    plain_s, geodesic_s = [], []
    for _ in range(args.repeats):
        plain_s.append(seconds(plain))
        geodesic_s.append(seconds(geodesic))
    p, g = statistics.median(plain_s), statistics.median(geodesic_s)
    print(
        f"{args.n} documents × {args.dim} dims, {args.queries} queries in batches of "
        f"{args.batch}, top {args.top_k} (geodesic re-ranks {fetch}), k = {args.k}, "
        f"reach = {args.reach}"
    )
    print(
        f"graph build: {build:.1f} s, {graph.nbytes / 1e6:.1f} MB (table {graph.table.nnz} entries)"
    )
    print(f"plain search: {args.queries / p:.0f} QPS")
    print(f"geodesic:     {args.queries / g:.0f} QPS")
    print(f"geodesic cost / plain cost: {g / p:.2f}× (target ≤ 3×)")


if __name__ == "__main__":
    main()
