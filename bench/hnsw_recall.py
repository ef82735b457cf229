"""Recall@10 and single-client latency of a FAISS HNSW store of bench/scale.py at several
efSearch values: the evidence for the store's HNSW defaults (``faiss_index.HNSW_DEFAULTS``).

    .venv/bin/python bench/hnsw_recall.py --max-real 10000 --size 1000000 \\
        --engine faiss-hnsw32-ef128 --ef 64,128,256,512

Opens the store that ``bench/scale.py`` grew (same ``--work-dir``, documents and encoder
options) once per efSearch, in this process with FAISS on one thread, and compares its top 10
against exact numpy search over the same documents (``scale.exact_top10``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as scale.py's store process


sys.path.insert(0, str(Path(__file__).parent))
import scale  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/senteval_cn"))
    parser.add_argument("--work-dir", type=Path, default=Path.home() / ".cache/baihua/scale")
    parser.add_argument("--max-real", type=int, default=0)
    parser.add_argument("--size", type=int, default=1000000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--engine", default="faiss-hnsw32-ef128")
    parser.add_argument("--ef", default="64,128,256,512")
    parser.add_argument("--searches", type=int, default=400)
    parser.add_argument("--backend", default="")
    parser.add_argument("--dtype", default="")
    parser.add_argument("--out", type=Path, default=None, help="append the rows to this JSON")
    args = parser.parse_args()
    args.sizes, args.dims, args.seed, args.queries = [args.size], [args.dim], 0, 200
    args.fit_sentences, args.faiss_threads = 10000, 1
    setup, info = scale.prepare(args)
    engine = scale.ENGINES[args.engine]
    path = scale.store_path(args, setup, engine, args.dim)
    corpus = scale.make_corpus(info, setup, args.dim, args.size)
    bank = scale.VectorBank(Path(info["folder"]) / f"queries-{setup.n_queries}", [])
    queries = corpus.finish(bank.load(setup.n_queries))
    start = time.perf_counter()
    truth = scale.exact_top10(corpus, queries, args.size)
    print(f"exact top 10 of {len(queries)} queries: {time.perf_counter() - start:.0f} s")
    from baihua.index import FaissStore

    rows = []
    for ef in [int(e) for e in args.ef.split(",")]:
        store = FaissStore.open(path, args.dim, engine.index, search_params=f"efSearch={ef}")
        if len(store) != args.size:
            sys.exit(f"{path} holds {len(store):,} documents, not {args.size:,}")
        recall = scale.cmd_recall(store, queries, truth)["recall_at_10"]
        ms = scale.latencies(store, queries, 1, args.searches)
        store.close()
        row = {"engine": args.engine, "n": args.size, "dim": args.dim, "efSearch": ef,
               "recall_at_10": recall, "load_average": os.getloadavg()[0]}  # fmt: skip
        row |= scale.summary(ms)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        old = json.loads(args.out.read_text()) if args.out.exists() else []
        args.out.write_text(json.dumps(old + rows, indent=1))


if __name__ == "__main__":
    main()
