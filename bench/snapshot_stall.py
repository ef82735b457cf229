"""How long searches and payload writes stall while a FAISS store of bench/scale.py saves its
snapshot: the index file fsynced every ``snapshot.SYNC_EVERY_BYTES`` while it is written (what
``FaissStore.save`` does) against one fsync at the end (what it did before).

    .venv/bin/python bench/snapshot_stall.py --max-real 10000 --size 1000000 --dim 128 \\
        --engine faiss-hnsw32-efc200 --repeats 3 --out docs/results-snapshot-stall.json

Opens the store that ``bench/scale.py`` grew (same ``--work-dir``, documents and encoder options)
in this process, FAISS on one thread. Each repeat rewrites one document (so the index has
something to save) and runs ``scale.cmd_snapshot`` once per way, alternating which goes first:
``save()`` while 2 threads search back to back and 1 rewrites a payload 20 times a second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as scale.py's store process

sys.path.insert(0, str(Path(__file__).parent))
import scale  # noqa: E402

from baihua.index import snapshot  # noqa: E402

STEPS = snapshot.SYNC_EVERY_BYTES
WAYS = {f"fsync every {STEPS >> 20} MB": STEPS, "one fsync at the end": 0}


def save_with(way: str, store: Any, queries: Any, size: int) -> dict[str, Any]:
    snapshot.SYNC_EVERY_BYTES = WAYS[way]
    try:
        scale.cmd_touch(store, [int(time.time_ns() % size)])
        return {"way": way, "load_average": os.getloadavg()[0]} | scale.cmd_snapshot(
            store, queries, size, margin_s=1.0, write_rate=20.0
        )
    finally:
        snapshot.SYNC_EVERY_BYTES = STEPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/senteval_cn"))
    parser.add_argument("--work-dir", type=Path, default=Path.home() / ".cache/baihua/scale")
    parser.add_argument("--max-real", type=int, default=0)
    parser.add_argument("--size", type=int, default=1000000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--engine", default="faiss-hnsw32-efc200")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="")
    parser.add_argument("--dtype", default="")
    parser.add_argument("--out", type=Path, default=None, help="append the rows to this JSON")
    args = parser.parse_args()
    args.sizes, args.dims, args.seed, args.queries = [args.size], [args.dim], 0, 200
    args.fit_sentences, args.faiss_threads = 10000, 1
    setup, info = scale.prepare(args)
    engine = scale.ENGINES[args.engine]
    corpus = scale.make_corpus(info, setup, args.dim, args.size)
    bank = scale.VectorBank(Path(info["folder"]) / f"queries-{setup.n_queries}", [])
    queries = corpus.finish(bank.load(setup.n_queries))
    path = scale.store_path(args, setup, engine, args.dim)
    store = scale.open_store(engine, path, args.dim, scale.store_spec(info, setup, args.dim))
    if len(store) != args.size:
        sys.exit(f"{path} holds {len(store):,} documents, not {args.size:,}")
    rows = []
    for repeat in range(args.repeats):
        ways = list(WAYS) if repeat % 2 == 0 else list(reversed(WAYS))
        for way in ways:
            row = {"engine": args.engine, "n": args.size, "dim": args.dim, "repeat": repeat}
            row |= save_with(way, store, queries, args.size)
            rows.append(row)
            print(json.dumps(row), flush=True)
    store.close()
    for way in WAYS:
        mine = [r for r in rows if r["way"] == way]
        print(f"{way}: search stall ms {[round(r['search_stall_ms']) for r in mine]}, "
              f"write stall ms {[round(r['write_stall_ms']) for r in mine]}, "
              f"save s {[round(r['save_s'], 1) for r in mine]}")  # fmt: skip
    if args.out:
        old = json.loads(args.out.read_text()) if args.out.exists() else []
        args.out.write_text(json.dumps(old + rows, indent=1))


if __name__ == "__main__":
    main()
