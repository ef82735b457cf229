"""`POST /search` latency (p50/p99) and QPS on a 100k-document Flat index, at the model's full
dimension and whitened to fewer dimensions, beside the index-only search time.

    .venv/bin/python bench/search_latency.py \
        --fit-corpus ../shared/data/senteval_cn/STS-B/STS-B.train.data

The index is filled with random unit vectors (encoding 100k documents would only measure the
encoder again); queries are real Chinese sentences sent by `--clients` concurrent clients, one
query per request, through the real server (`baihua serve`), so the latency includes embedding
the query. For each dimension below the model's, a whitening is fitted on `--fit-corpus` first.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from baihua.encoder import l2_normalize
from baihua.encoder.corpus import count_sentences
from baihua.index import FaissStore
from baihua.jobs.fit import FitJob
from baihua.serving.components import build_encoder
from baihua.serving.settings import load_settings
from serving import free_port, start_server, wait_ready

QUERIES = [
    a + b
    for a, b in itertools.product(
        ["怎么", "为什么", "如何", "在哪里可以", "什么时候能"],
        ["开通花呗", "还信用卡", "修改登录密码", "申请贷款", "查询余额", "取消订单", "退款到账"],
    )
]


def fill_index(data_dir: Path, dim: int, n_docs: int, seed: int = 0) -> FaissStore:
    rng = np.random.default_rng(seed)
    store = FaissStore.open(data_dir / "index", dim=dim)
    for start in range(0, n_docs, 10_000):
        ids = np.arange(start, min(start + 10_000, n_docs))
        vectors = l2_normalize(rng.standard_normal((len(ids), dim)).astype(np.float32))
        store.add(ids, vectors, [f"document {i}" for i in ids])
    store.save()
    return store


def index_only_ms(store: FaissStore, dim: int, n: int = 200) -> float:
    queries = l2_normalize(np.random.default_rng(1).standard_normal((n, dim)).astype(np.float32))
    start = time.perf_counter()
    for query in queries:
        store.search(query[None], top_k=10)
    return 1000 * (time.perf_counter() - start) / n


def http_latencies(url: str, n: int, clients: int) -> tuple[np.ndarray, float]:
    """Per-request latencies (ms) and the wall time for `n` single-query searches."""
    queries = list(itertools.islice(itertools.cycle(QUERIES), n))
    shares = [queries[i::clients] for i in range(clients)]

    def run(share: list[str]) -> list[float]:
        latencies = []
        with httpx.Client(base_url=url, timeout=60) as http:
            for query in share:
                start = time.perf_counter()
                http.post("/search", json={"query": query, "top_k": 10}).raise_for_status()
                latencies.append(1000 * (time.perf_counter() - start))
        return latencies

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [ms for share in pool.map(run, shares) for ms in share]
    return np.array(latencies), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="me5-small")
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--dims", default="full,128", help="full and/or whitened dimensions")
    parser.add_argument("--fit-corpus", type=Path, help="corpus for the whitening fits")
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    encoder = build_encoder(load_settings(model=args.model))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.dims.split(","):
            dim = encoder.dim if name == "full" else int(name)
            data_dir = Path(tmp) / f"d{dim}"
            flags = ["--model", args.model]
            if dim != encoder.dim:
                if args.fit_corpus is None:
                    parser.error(f"--fit-corpus is needed to whiten to {dim} dims")
                artifact = Path(tmp) / f"whitening-{dim}"
                job = FitJob(args.fit_corpus, artifact, encoder, n_components=dim)
                job.plan(count_sentences(args.fit_corpus))
                job.run()
                flags += ["--whitening", str(artifact)]
            with fill_index(data_dir, dim, args.docs) as store:
                direct = index_only_ms(store, dim)
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            server = start_server(port, data_dir, *flags)
            try:
                wait_ready(url, server)
                http_latencies(url, 2 * args.clients, args.clients)  # warm-up
                latencies, wall = http_latencies(url, args.queries, args.clients)
            finally:
                server.terminate()
                server.wait(timeout=60)
            p50, p99 = np.percentile(latencies, [50, 99])
            print(f"{dim:4d} dims, {args.docs} docs: /search p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  "
                  f"{args.queries / wall:6.1f} QPS ({args.clients} clients);  "
                  f"index-only search {direct:.2f} ms/query")  # fmt: skip


if __name__ == "__main__":
    main()
