"""Grow one store to 10k → 100k → 1M documents of real Chinese sentences and record, at each size,
what it costs: load rate, memory, disk, start-up (clean and after kill -9), snapshot stalls,
search latency and recall, filtered search, paging to the end, delete-by-filter.

    .venv/bin/python bench/scale.py --data-dir ../shared/data/senteval_cn \
        --sizes 10000,100000,1000000 --out docs/results-scale.json

Resumable: each (store, dims, size) is appended to ``--out`` when measured, and a rerun skips
what is recorded; the stores and the vector cache live in ``--work-dir`` and grow from where
they stopped. ``--report`` only prints the markdown tables and writes the plots.

Documents. The sentences of every ``*.data`` file under ``--data-dir`` (both sides of each pair),
deduplicated, shuffled with ``--seed``; the last ``--queries`` of them are the queries (never
stored), the rest are the real documents (173,617 for senteval_cn). They are encoded once with
the service's pipeline (``load_settings()``: the default model and backend; BAIHUA_* variables
apply), passages with the passage prefix, queries with the query prefix, and the raw vectors are
cached as .npy chunks in a folder named by the encoder's ``EmbeddingSpec``. The 128-dim rows
use a whitening (β = γ = 1, k = 128) fitted on the first ``--fit-sentences`` real documents.
Document i below the number of real ones R is real sentence i. Beyond R, documents are derived:
for each block of 4096 ids a generator seeded (seed, block) draws two real documents p, q and a
weight w ∈ [0.3, 0.7] per id; the raw vector is w·x_p + (1 − w)·x_q (then whitened and/or
L2-normalised like a real one) and the text is the two sentences joined by a space. Payload:
``{"bucket": id % 100}``; filters ``{"bucket": 7}`` (1 %) and ``{"bucket": {"$lt": 50}}`` (50 %),
delete ``{"bucket": {"$gte": 90}}`` (10 %, on a copy of the store, so the next size grows the
intact one).

Costs. Encoding is timed once per real sentence (the rate is reported; derived documents are
charged at that rate, marked as estimated); store time is ``add`` in chunks of 4096 with given
vectors, excluding the generation of the vectors. Every other figure is taken in a subprocess that
holds the store (its own session, so kill -9 takes the embedded Milvus engine with it): RSS is
that process tree's, after opening and after the searches; start to ready is from spawning the
process to its store being open (interpreter and imports included), after a clean ``close`` and
after kill -9 following a write the snapshot does not hold (so FAISS rebuilds its index).
The snapshot is taken while 2 threads search back to back and one rewrites a payload
``--write-rate`` times a second. Searches are single queries, top 10, from 1, 8 and 32 threads;
recall@10 is against exact numpy search over the same vectors. FAISS runs on ``--faiss-threads``
OpenMP threads (1 by default, set through OMP_NUM_THREADS for the whole store process:
``omp_set_num_threads`` binds only its calling thread, and 2-thread teams spinning on a shared
machine made single-query searches ~100x slower).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

BLOCK = 4096  # ids per load chunk and per derived-document block
ENCODE_CHUNK = 2048  # sentences per cached .npy file of raw vectors
MB = 1 << 20
FILTERS = {"1%": {"bucket": 7}, "50%": {"bucket": {"$lt": 50}}}
DELETE_FILTER = {"bucket": {"$gte": 90}}
CLIENTS = (1, 8, 32)


@dataclasses.dataclass(frozen=True)
class Engine:
    """A store configuration: a FAISS factory or a Milvus index type, with search settings."""

    name: str
    kind: str  # "faiss" or "milvus"
    index: str
    search: str = ""  # FAISS ParameterSpace string
    build: tuple[tuple[str, int], ...] = ()  # Milvus index params
    milvus_search: tuple[tuple[str, int], ...] = ()


ENGINES = {
    e.name: e
    for e in (
        Engine("faiss-flat", "faiss", "Flat"),
        # the 10k/100k rows of December 2026 (FAISS's efConstruction 40, then the default)
        Engine("faiss-hnsw32", "faiss", "HNSW32", "efConstruction=40,efSearch=64"),
        # a first try at better defaults: recall@10 0.98 at 100k, 0.82 at 1M
        Engine("faiss-hnsw32-ef128", "faiss", "HNSW32", "efConstruction=80,efSearch=128"),
        # the 1M rows: efSearch 128 on an efConstruction-80 graph gave recall@10 0.82 at 1M; on
        # this graph bench/hnsw_recall.py found 0.960 at efSearch 384 (the store's default since)
        Engine("faiss-hnsw32-efc200", "faiss", "HNSW32", "efConstruction=200,efSearch=512"),
        Engine("faiss-ivfpq", "faiss", "IVF1024,PQ32", "nprobe=16"),
        Engine(
            "milvus-ivf",
            "milvus",
            "IVF_FLAT",
            build=(("nlist", 1024),),
            milvus_search=(("nprobe", 16),),
        ),  # fmt: skip
        Engine("milvus-flat", "milvus", "FLAT"),
    )
}


# --------------------------------------------------------------------------------- documents


def real_sentences(data_dir: Path, seed: int) -> list[str]:
    """Both sides of every pair under ``data_dir``, deduplicated, in a seeded shuffle."""
    files = sorted(data_dir.glob("*/*.data")) or sorted(data_dir.glob("*.data"))
    if not files:
        sys.exit(f"no *.data files under {data_dir}: pass the senteval_cn folder as --data-dir")
    seen: dict[str, None] = {}
    for file in files:
        for line in file.read_text(encoding="utf-8").splitlines():
            for text in line.split("\t")[:2]:
                if text.strip():
                    seen[text.strip()] = None
    sentences = list(seen)
    random.Random(seed).shuffle(sentences)
    return sentences


def digest(value: Any) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class VectorBank:
    """Raw (unnormalised) vectors of a list of texts, encoded in chunks of ``ENCODE_CHUNK`` and
    cached as .npy in ``folder``; ``seconds.json`` keeps each chunk's encode time."""

    def __init__(self, folder: Path, texts: list[str]) -> None:
        self.folder = folder
        self.texts = texts
        folder.mkdir(parents=True, exist_ok=True)
        self._times_file = folder / "seconds.json"
        self.seconds: dict[str, float] = (
            json.loads(self._times_file.read_text()) if self._times_file.exists() else {}
        )

    def _chunk(self, k: int) -> Path:
        return self.folder / f"raw-{k:05d}.npy"

    def ensure(self, n: int, encode: Callable[[list[str]], np.ndarray], what: str) -> None:
        """Encode (and cache) the first ``n`` texts where not cached yet."""
        todo = [k for k in range(-(-n // ENCODE_CHUNK)) if not self._chunk(k).exists()]
        if not todo:
            return
        missing = sum(len(self.texts[k * ENCODE_CHUNK : (k + 1) * ENCODE_CHUNK]) for k in todo)
        with tqdm(total=missing, desc=f"encode {what}", unit="sent", smoothing=0.1) as bar:
            for k in todo:
                texts = self.texts[k * ENCODE_CHUNK : (k + 1) * ENCODE_CHUNK]
                start = time.perf_counter()
                vectors = encode(texts)
                self.seconds[str(k)] = time.perf_counter() - start
                tmp = self._chunk(k).with_suffix(".tmp.npy")
                np.save(tmp, vectors.astype(np.float32))
                tmp.replace(self._chunk(k))
                self._times_file.write_text(json.dumps(self.seconds))
                bar.update(len(texts))

    def rate(self) -> float:
        """Sentences per second over every chunk encoded (by any run)."""
        done = [int(k) for k in self.seconds]
        sentences = sum(len(self.texts[k * ENCODE_CHUNK : (k + 1) * ENCODE_CHUNK]) for k in done)
        return sentences / max(sum(self.seconds.values()), 1e-9)

    def load(self, n: int) -> np.ndarray:
        parts = [np.load(self._chunk(k)) for k in range(-(-n // ENCODE_CHUNK))]
        return np.concatenate(parts)[:n] if parts else np.empty((0, 0), np.float32)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class Corpus:
    """Documents by id: real ones below ``len(raw)``, derived ones above (see the module doc)."""

    def __init__(
        self, sentences: list[str], raw: np.ndarray, transform: Any, dim: int, seed: int
    ) -> None:
        self.sentences = sentences
        self.raw = raw
        self.transform = transform
        self.dim = dim
        self.seed = seed

    @property
    def n_real(self) -> int:
        return len(self.raw)

    def _raw_and_texts(self, lo: int, hi: int) -> tuple[np.ndarray, list[str]]:
        real_hi = min(hi, self.n_real)
        raws, texts = [self.raw[lo:real_hi]], self.sentences[lo:real_hi]
        for block in range(max(lo, self.n_real) // BLOCK, -(-hi // BLOCK)):
            b_lo, b_hi = block * BLOCK, (block + 1) * BLOCK
            rng = np.random.default_rng([self.seed, block])
            p, q = rng.integers(0, self.n_real, size=(2, BLOCK))
            w = rng.uniform(0.3, 0.7, BLOCK).astype(np.float32)[:, None]
            keep = slice(max(lo, b_lo, self.n_real) - b_lo, min(hi, b_hi) - b_lo)
            p, q, w = p[keep], q[keep], w[keep]
            raws.append(w * self.raw[p] + (1 - w) * self.raw[q])
            texts = texts + [
                f"{self.sentences[a]} {self.sentences[b]}" for a, b in zip(p, q, strict=True)
            ]
        return np.concatenate(raws), texts

    def vectors(self, lo: int, hi: int) -> np.ndarray:
        return self.finish(self._raw_and_texts(lo, hi)[0])

    def finish(self, raw: np.ndarray) -> np.ndarray:
        """Raw vectors as stored: whitened to ``dim`` when there is a transform, unit length."""
        out = raw if self.transform is None else self.transform.transform(raw)
        return l2_normalize(out[:, : self.dim])

    def block(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, list[str], list[dict]]:
        raw, texts = self._raw_and_texts(lo, hi)
        ids = np.arange(lo, hi, dtype=np.int64)
        return ids, self.finish(raw), texts, [{"bucket": i % 100} for i in range(lo, hi)]


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a store's documents are made of; results and stores of another setup never mix."""

    data_dir: str
    sentences_sha1: str
    spec: dict[str, Any]
    n_real: int
    n_queries: int
    fit_sentences: int
    seed: int
    faiss_threads: int

    @property
    def key(self) -> str:
        return digest(dataclasses.asdict(self) | {"data_dir": None})[:12]


def prepare(args: argparse.Namespace) -> tuple[Setup, dict[str, Any]]:
    """Encode what is missing and fit the whitening; returns the setup and what workers need."""
    sentences = real_sentences(args.data_dir, args.seed)
    queries, docs = sentences[-args.queries :], sentences[: -args.queries]
    n_real = min(len(docs), args.max_real or len(docs))
    needed = min(n_real, max(args.sizes))
    pipeline = build_pipeline(args)
    spec = pipeline.spec.raw
    folder = args.work_dir / "vectors" / digest([spec.to_dict(), digest(sentences)])[:16]
    (folder / "spec.json").parent.mkdir(parents=True, exist_ok=True)
    (folder / "spec.json").write_text(json.dumps(spec.to_dict(), indent=1))

    def encoder(text_type: str) -> Callable[[list[str]], np.ndarray]:
        def encode(texts: list[str]) -> np.ndarray:
            embedded = pipeline.embed(texts, text_type=text_type, whiten=False, normalize=False)
            return np.asarray(embedded.vectors, dtype=np.float32)

        return encode

    step = time.perf_counter()
    query_bank = VectorBank(folder / f"queries-{len(queries)}", queries)
    query_bank.ensure(len(queries), encoder("query"), "queries")
    doc_bank = VectorBank(folder / f"passages-{len(docs)}", docs)
    doc_bank.ensure(max(needed, args.fit_sentences), encoder("passage"), "documents")
    print(f"[encode] {time.perf_counter() - step:.1f} s this run; {doc_bank.rate():.1f} "
          f"sentences/s over every cached chunk ({spec.summary()})", flush=True)  # fmt: skip
    raw_dim = int(doc_bank.load(1).shape[1])
    if any(d > raw_dim for d in args.dims):
        sys.exit(f"--dims {args.dims}: the encoder's vectors have {raw_dim} dimensions")
    k = max([d for d in args.dims if d < raw_dim], default=1)  # smaller dims slice its columns
    whitening = folder / f"whitening-{k}-fit{args.fit_sentences}"
    if not whitening.exists():
        from baihua.whitening import Whitening

        fitted = Whitening(n_components=k).fit(doc_bank.load(args.fit_sentences))
        fitted.save_pretrained(whitening, spec=spec, text_type="passage")
    setup = Setup(
        str(args.data_dir), digest(sentences), spec.to_dict(), n_real, len(queries),
        args.fit_sentences, args.seed, args.faiss_threads,
    )  # fmt: skip
    return setup, {
        "folder": str(folder),
        "whitening": str(whitening),
        "encode_rate": doc_bank.rate(),
        "raw_dim": raw_dim,
        "docs": docs,
    }


def build_pipeline(args: argparse.Namespace) -> Any:
    from baihua.serving.components import build_pipeline as service_pipeline
    from baihua.serving.settings import load_settings

    overrides = {k: v for k, v in (("backend", args.backend), ("dtype", args.dtype)) if v}
    return service_pipeline(load_settings(**overrides).model_copy(update={"whitening": None}))


def make_corpus(info: dict[str, Any], setup: Setup, dim: int, size: int) -> Corpus:
    """The documents of a store of ``size``: derived ones draw on every real one."""
    docs = info["docs"]
    bank = VectorBank(Path(info["folder"]) / f"passages-{len(docs)}", docs)
    raw = bank.load(min(size, setup.n_real))
    return Corpus(docs, raw, load_whitening(info, dim), dim, setup.seed)


def load_whitening(info: dict[str, Any], dim: int) -> Any:
    """None at the encoder's own dimension; else the whitening (its first ``dim`` columns)."""
    if dim == info["raw_dim"]:
        return None
    from baihua.whitening import load_transform

    return load_transform(info["whitening"])


def store_spec(info: dict[str, Any], setup: Setup, dim: int) -> Any:
    from baihua.core.spec import EmbeddingSpec

    spec = EmbeddingSpec.from_dict(setup.spec)
    transform = load_whitening(info, dim)
    return spec if transform is None else spec.with_transform(transform.digest(), dim)


# ------------------------------------------------------------------------------------ worker


def open_store(engine: Engine, path: Path, dim: int, spec: Any) -> Any:
    if engine.kind == "faiss":
        from baihua.index import FaissStore

        return FaissStore.open(path, dim, engine.index, search_params=engine.search, spec=spec)
    from baihua.index.milvus_store import MilvusStore

    return MilvusStore(
        str(path / "milvus.db"), dim, index_type=engine.index, index_params=dict(engine.build),
        search_params=dict(engine.milvus_search), spec=spec,
    )  # fmt: skip


def worker(conn: Any, engine: Engine, path: Path, dim: int, spec: Any, threads: int) -> None:
    """Open the store, say so, then run the parent's commands until "close" (or a kill)."""
    os.setsid()  # kill -9 of the group takes the embedded Milvus engine along
    import faiss

    faiss.omp_set_num_threads(threads)
    start = time.perf_counter()
    store = open_store(engine, path, dim, spec)
    opened = {"open_s": time.perf_counter() - start, "count": len(store)}
    # an IVF/PQ factory searches exactly until it has enough vectors to train
    conn.send(("ok", opened | {"trained": getattr(store, "is_trained", True)}))
    commands = {"load": cmd_load, "search": cmd_search, "recall": cmd_recall,
                "filtered": cmd_filtered, "scan": cmd_scan, "snapshot": cmd_snapshot,
                "delete": cmd_delete, "touch": cmd_touch, "save": cmd_save}  # fmt: skip
    while True:
        name, kwargs = conn.recv()
        if name == "close":
            start = time.perf_counter()
            store.close()
            conn.send(("ok", {"close_s": time.perf_counter() - start}))
            return
        try:
            conn.send(("ok", commands[name](store, **kwargs)))
        except Exception:  # noqa: BLE001 - handed to the parent, which stops
            conn.send(("error", traceback.format_exc()))


def cmd_load(store: Any, corpus_args: tuple, lo: int, hi: int) -> dict[str, Any]:
    """Add documents ``lo`` to ``hi``; per-chunk store times show a cost that grows with size."""
    corpus = make_corpus(*corpus_args)
    store_s = gen_s = 0.0
    chunk_s: list[float] = []
    with tqdm(total=hi - lo, desc="store add", unit="doc", smoothing=0.1) as bar:
        for b_lo in range(lo, hi, BLOCK):
            start = time.perf_counter()
            ids, vectors, texts, payloads = corpus.block(b_lo, min(b_lo + BLOCK, hi))
            middle = time.perf_counter()
            store.add(ids, vectors, texts, payloads)
            gen_s += middle - start
            chunk_s.append(time.perf_counter() - middle)
            store_s += chunk_s[-1]
            bar.update(len(ids))
    start = time.perf_counter()  # an IVF/PQ factory trains in a thread: its time is store time
    trained = store.wait_trained() if hasattr(store, "wait_trained") else True
    wait_s = time.perf_counter() - start
    return {"store_s": store_s + wait_s, "training_wait_s": wait_s, "trained": trained,
            "gen_s": gen_s, "chunk_s": chunk_s}  # fmt: skip


def latencies(store: Any, queries: np.ndarray, clients: int, n: int, **search: Any) -> np.ndarray:
    """Milliseconds per single-query search, ``n`` of them spread over ``clients`` threads."""
    picks = [queries[i % len(queries)] for i in range(n)]

    def run(share: list[np.ndarray]) -> list[float]:
        out = []
        for query in share:
            start = time.perf_counter()
            store.search(query[None], 10, **search)
            out.append(1000 * (time.perf_counter() - start))
        return out

    with ThreadPoolExecutor(clients) as pool:
        return np.array([ms for part in pool.map(run, [picks[c::clients] for c in range(clients)])
                         for ms in part])  # fmt: skip


def summary(ms: np.ndarray, wall_s: float | None = None) -> dict[str, float]:
    out = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}
    if wall_s:
        out["qps"] = len(ms) / wall_s
    return out


def cmd_search(store: Any, queries: np.ndarray, n: int) -> dict[str, Any]:
    store.search(queries[:8], 10)  # warm-up
    out = {}
    for clients in CLIENTS:
        start = time.perf_counter()
        ms = latencies(store, queries, clients, max(n, 4 * clients))
        out[str(clients)] = summary(ms, time.perf_counter() - start)
    return out


def cmd_recall(store: Any, queries: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    found = store.search(queries, 10)
    hits = [len({h.id for h in row} & set(t.tolist())) for row, t in zip(found, truth, strict=True)]
    return {"recall_at_10": float(np.mean(hits)) / 10}


def cmd_filtered(store: Any, queries: np.ndarray, n: int) -> dict[str, Any]:
    out = {}
    for name, where in FILTERS.items():
        ms = latencies(store, queries, 1, n, filter=where)
        hits = store.search(queries[:20], 10, filter=where)
        out[name] = summary(ms) | {"mean_hits": float(np.mean([len(h) for h in hits]))}
    return out


def cmd_scan(store: Any, page: int) -> dict[str, float]:
    start, after, seen, pages = time.perf_counter(), -1, 0, 0
    while docs := store.scan(after=after, limit=page):
        seen, pages, after = seen + len(docs), pages + 1, docs[-1].id
    return {"scan_s": time.perf_counter() - start, "scanned": seen, "pages": pages}


def cmd_snapshot(
    store: Any, queries: np.ndarray, n_docs: int, margin_s: float, write_rate: float
) -> dict[str, Any]:
    """``save()`` while 2 threads search back to back and 1 rewrites a payload ``write_rate``
    times a second; the longest search and write that overlap it."""
    stop = threading.Event()
    ops: list[tuple[str, float, float]] = []

    def searcher(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            start = time.perf_counter()
            store.search(queries[rng.integers(len(queries))][None], 10)
            ops.append(("search", start, time.perf_counter()))

    def writer() -> None:
        rng = np.random.default_rng(99)
        due = time.perf_counter()
        while not stop.wait(max(0.0, due - time.perf_counter())):
            due += 1 / write_rate
            i = int(rng.integers(n_docs))
            start = time.perf_counter()
            store.set_payload(i, {"bucket": i % 100})
            ops.append(("write", start, time.perf_counter()))

    threads = [threading.Thread(target=searcher, args=(s,)) for s in (1, 2)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    time.sleep(margin_s)
    s0 = time.perf_counter()
    store.save()
    s1 = time.perf_counter()
    time.sleep(margin_s)
    stop.set()
    for t in threads:
        t.join()
    out: dict[str, Any] = {"save_s": s1 - s0, "write_rate": write_rate}
    for kind in ("search", "write"):
        during = [b - a for k, a, b in ops if k == kind and a < s1 and b > s0]
        before = [b - a for k, a, b in ops if k == kind and b <= s0]
        out[f"{kind}_stall_ms"] = 1000 * max(during, default=0.0)
        out[f"{kind}_p50_before_ms"] = 1000 * float(np.median(before)) if before else None
        out[f"{kind}_ops_during"] = len(during)
    return out


def cmd_delete(store: Any) -> dict[str, float]:
    start = time.perf_counter()
    deleted = store.delete_where(DELETE_FILTER)
    return {"delete_s": time.perf_counter() - start, "deleted": deleted}


def cmd_touch(store: Any, ids: list[int]) -> dict[str, float]:
    """Rewrite documents as they are: a committed write the last snapshot does not hold."""
    docs = store.get_many(ids)
    start = time.perf_counter()
    store.upsert([d.id for d in docs], store.vectors(ids), [d.text for d in docs],
                 [d.payload for d in docs])  # fmt: skip
    return {"touch_s": time.perf_counter() - start}


def cmd_save(store: Any) -> dict[str, float]:
    start = time.perf_counter()
    store.save()
    return {"save_s": time.perf_counter() - start}


# ------------------------------------------------------------------------------------ parent


class Holder:
    """A subprocess holding the store: started, asked, closed or killed."""

    def __init__(self, engine: Engine, path: Path, dim: int, spec: Any, threads: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        start = time.perf_counter()
        self.process = context.Process(
            target=worker, args=(child, engine, path, dim, spec, threads), daemon=False
        )
        # omp_set_num_threads binds only the thread calling it: every search thread would run a
        # team of the default size (as the service's request threads do).
        saved = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = str(threads)
        try:
            self.process.start()
        finally:
            if saved is None:
                del os.environ["OMP_NUM_THREADS"]
            else:
                os.environ["OMP_NUM_THREADS"] = saved
        self.ready = self._answer() | {"ready_s": time.perf_counter() - start}

    def _answer(self) -> dict[str, Any]:
        try:
            status, value = self.conn.recv()
        except EOFError:
            self.process.join()
            raise RuntimeError(f"the store process died (exit {self.process.exitcode})") from None
        if status != "ok":
            self.kill()
            raise RuntimeError(f"the store process failed:\n{value}")
        return dict(value)

    def ask(self, name: str, **kwargs: Any) -> dict[str, Any]:
        self.conn.send((name, kwargs))
        return self._answer()

    def rss(self) -> dict[str, float]:
        """RSS and peak RSS (MB) of the process and its descendants (the Milvus engine)."""
        return tree_memory(self.process.pid)

    def close(self) -> dict[str, Any]:
        out = self.ask("close")
        self.process.join()
        return out

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.join()


def tree_memory(pid: int) -> dict[str, float]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = {pid}, [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        tree.update(children)
        frontier = children
    rss = hwm = 0
    for p in tree:
        try:
            fields = dict(
                line.split(":", 1) for line in Path(f"/proc/{p}/status").read_text().splitlines()
            )
        except OSError:
            continue
        rss += int(fields.get("VmRSS", "0 kB").split()[0])
        hwm += int(fields.get("VmHWM", "0 kB").split()[0])
    return {"rss_mb": rss / 1024, "peak_rss_mb": hwm / 1024, "processes": len(tree)}


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def exact_top10(corpus: Corpus, queries: np.ndarray, n: int) -> np.ndarray:
    """Ids of the 10 best documents below ``n`` for each query (float64 numpy)."""
    best_s = np.full((len(queries), 0), -np.inf)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    q = queries.astype(np.float64)
    for lo in range(0, n, 16 * BLOCK):
        hi = min(lo + 16 * BLOCK, n)
        scores = q @ corpus.vectors(lo, hi).astype(np.float64).T
        best_s = np.concatenate([best_s, scores], axis=1)
        best_i = np.concatenate([best_i, np.broadcast_to(np.arange(lo, hi), scores.shape)], axis=1)
        keep = np.argsort(-best_s, axis=1)[:, :10]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    return best_i


class Steps:
    """Wall time of each step of one size, printed as it goes, so a long run can be planned."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str) -> Any:
        steps = self

        class Timer:
            def __enter__(self) -> None:
                self.start = time.perf_counter()

            def __exit__(self, *exc: Any) -> None:
                steps.seconds[name] = time.perf_counter() - self.start
                print(f"  [{steps.label}] {name}: {steps.seconds[name]:.1f} s", flush=True)

        return Timer()


def store_path(args: argparse.Namespace, setup: Setup, engine: Engine, dim: int) -> Path:
    return args.work_dir / "stores" / setup.key / f"{engine.name}-{dim}"


def measure_size(
    engine: Engine,
    dim: int,
    size: int,
    setup: Setup,
    info: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Grow the store of (engine, dim) to ``size`` and measure it; returns the record."""
    label = f"{engine.name}@{dim} {size:,}"
    steps = Steps(label)
    path = store_path(args, setup, engine, dim)
    path.mkdir(parents=True, exist_ok=True)
    spec = store_spec(info, setup, dim)
    corpus = make_corpus(info, setup, dim, size)
    query_bank = VectorBank(Path(info["folder"]) / f"queries-{setup.n_queries}", [])
    queries = corpus.finish(query_bank.load(setup.n_queries))
    record: dict[str, Any] = {"engine": engine.name, "index": engine.index, "dim": dim, "n": size,
                              "search_params": engine.search,
                              "load_average_start": os.getloadavg()[0],
                              "started": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    threads = setup.faiss_threads
    with steps("open for loading"):
        holder = Holder(engine, path, dim, spec, threads)
    have = int(holder.ready["count"])
    if have > size:
        holder.close()
        sys.exit(f"{path} holds {have:,} documents, more than {size:,}: delete it to start over")
    corpus_args = (info, setup, dim, size)
    with steps("load"):
        load = holder.ask("load", corpus_args=corpus_args, lo=have, hi=size)
    added = size - have
    real_added = max(0, min(size, setup.n_real) - have)
    encode_s = added / info["encode_rate"]
    record["load"] = load | {
        "added": added, "real_added": real_added, "resumed_from": have,
        "store_docs_per_s": added / max(load["store_s"], 1e-9),
        "encode_s_estimated": encode_s, "encode_rate": info["encode_rate"],
        "build_docs_per_s_estimated": added / max(encode_s + load["store_s"], 1e-9),
    }  # fmt: skip
    record["rss_loading"] = holder.rss()
    with steps("snapshot under load"):
        record["snapshot"] = holder.ask(
            "snapshot",
            queries=queries,
            n_docs=size,
            margin_s=args.snapshot_margin_s,
            write_rate=args.write_rate,
        )
    with steps("close"):
        record["close_s"] = holder.close()["close_s"]
    record["disk_bytes"] = disk_bytes(path)
    record["index_file_bytes"] = sum(f.stat().st_size for f in path.glob("index-*.faiss"))
    record["vector_bytes"] = size * dim * 4

    with steps("start after clean stop"):
        holder = Holder(engine, path, dim, spec, threads)
    record["ready_clean"] = holder.ready
    record["rss_open"] = holder.rss()
    with steps("exact search (numpy)"):
        truth = exact_top10(corpus, queries, size)
    with steps("recall"):
        record["recall"] = holder.ask("recall", queries=queries, truth=truth)
    with steps("search 1/8/32 clients"):
        record["search"] = holder.ask("search", queries=queries, n=args.searches)
    with steps("filtered search"):
        record["filtered"] = holder.ask("filtered", queries=queries, n=args.filtered_searches)
    record["rss_serving"] = holder.rss()
    with steps("page to the end"):
        record["scan"] = holder.ask("scan", page=args.page)
    with steps("write, then kill -9"):
        record["touch"] = holder.ask("touch", ids=list(range(0, size, max(1, size // 100))))
        holder.kill()
    with steps("start after kill -9"):
        holder = Holder(engine, path, dim, spec, threads)
    record["ready_after_kill"] = holder.ready
    record["rss_after_kill"] = holder.rss()
    with steps("save after recovery"):
        record["save_after_recovery"] = holder.ask("save")
    holder.close()

    copy = path.with_name(path.name + "-delete-copy")
    shutil.rmtree(copy, ignore_errors=True)
    with steps("copy for delete"):
        shutil.copytree(path, copy)
    with steps("delete 10 % by filter"):
        holder = Holder(engine, copy, dim, spec, threads)
        record["delete"] = holder.ask("delete")
        holder.close()
    shutil.rmtree(copy, ignore_errors=True)
    record["steps_s"] = steps.seconds
    record["load_average_end"] = os.getloadavg()[0]
    return record


# ------------------------------------------------------------------------------------ report


def fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def label(r: dict[str, Any]) -> str:
    """The store's name, factory and search settings (recorded since the 1M runs)."""
    settings = f", {r['search_params']}" if r.get("search_params") else ""
    return f"{r['engine']} ({r['index']}{settings})"


def tables(results: dict[str, Any]) -> Iterator[str]:
    rows = [r for by_size in results["runs"].values() for r in by_size.values()]
    for size in sorted({r["n"] for r in rows}):
        at = sorted((r for r in rows if r["n"] == size), key=lambda r: (r["engine"], -r["dim"]))
        yield f"\n**{size:,} documents** — load, memory, disk, start-up, snapshot\n"
        yield (
            "| store | dims | store docs/s | build docs/s (est.) | RSS serving MB | vectors MB "
            "| disk MB | ready clean s | ready after kill s | save s | stall search / write ms |"
        )
        yield "|---|---|---|---|---|---|---|---|---|---|---|"
        for r in at:
            snap = r["snapshot"]
            yield (
                f"| {label(r)} | {r['dim']} "
                f"| {fmt(r['load']['store_docs_per_s'])} "
                f"| {fmt(r['load']['build_docs_per_s_estimated'])} "
                f"| {fmt(r['rss_serving']['rss_mb'])} | {fmt(r['vector_bytes'] / MB)} "
                f"| {fmt(r['disk_bytes'] / MB)} | {fmt(r['ready_clean']['ready_s'], 1)} "
                f"| {fmt(r['ready_after_kill']['ready_s'], 1)} | {fmt(snap['save_s'], 2)} "
                f"| {fmt(snap['search_stall_ms'])} / {fmt(snap['write_stall_ms'])} |"
            )
        yield f"\n**{size:,} documents** — search (ms, single queries, top 10), paging, delete\n"
        yield (
            "| store | dims | recall@10 | p50 / p99, 1 client | p99, 8 | p99, 32 | QPS, 32 "
            "| filter 1 % p50 / p99 | filter 50 % p50 / p99 | page to end s | delete 10 % s |"
        )
        yield "|---|---|---|---|---|---|---|---|---|---|---|"
        for r in at:
            s, f = r["search"], r["filtered"]
            exact = "" if r["ready_clean"].get("trained", True) else " (untrained: exact)"
            yield (
                f"| {label(r)}{exact} | {r['dim']} "
                f"| {r['recall']['recall_at_10']:.3f} "
                f"| {fmt(s['1']['p50_ms'], 1)} / {fmt(s['1']['p99_ms'], 1)} "
                f"| {fmt(s['8']['p99_ms'], 1)} | {fmt(s['32']['p99_ms'], 1)} "
                f"| {fmt(s['32']['qps'])} "
                f"| {fmt(f['1%']['p50_ms'], 1)} / {fmt(f['1%']['p99_ms'], 1)} "
                f"| {fmt(f['50%']['p50_ms'], 1)} / {fmt(f['50%']['p99_ms'], 1)} "
                f"| {fmt(r['scan']['scan_s'], 1)} | {fmt(r['delete']['delete_s'], 2)} |"
            )
        yield f"\nWall time per step ({size:,}; for planning larger runs):\n"
        names = list(dict.fromkeys(k for r in at for k in r["steps_s"]))
        yield "| store | dims | " + " | ".join(names) + " |"
        yield "|---|---|" + "---|" * len(names)
        for r in at:
            cells = " | ".join(fmt(r["steps_s"].get(k), 1) for k in names)
            yield f"| {r['engine']} | {r['dim']} | {cells} |"


PLOTTED: dict[str, Callable[[dict[str, Any]], float]] = {
    "store time to add, s": lambda r: r["load"]["store_s"],
    "RSS serving, MB": lambda r: r["rss_serving"]["rss_mb"],
    "disk, MB": lambda r: r["disk_bytes"] / MB,
    "ready after clean stop, s": lambda r: r["ready_clean"]["ready_s"],
    "ready after kill -9, s": lambda r: r["ready_after_kill"]["ready_s"],
    "save(), s": lambda r: r["snapshot"]["save_s"],
    "p99, 1 client, ms": lambda r: r["search"]["1"]["p99_ms"],
    "page to the end, s": lambda r: r["scan"]["scan_s"],
}


def plot(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(18, 8))
    engines = sorted({key.split("@")[0] for key in results["runs"]})
    colours = {engine: plt.get_cmap("tab10")(i % 10) for i, engine in enumerate(engines)}
    own_dim = max(int(key.split("@")[1]) for key in results["runs"])  # the rest are whitened
    for ax, (title, value) in zip(axes.flat, PLOTTED.items(), strict=True):
        for key, by_size in sorted(results["runs"].items()):
            rows = sorted(by_size.values(), key=lambda r: r["n"])
            engine, dim = key.split("@")
            style = "o-" if int(dim) < own_dim else "s--"
            ax.plot([r["n"] for r in rows], [max(value(r), 1e-3) for r in rows], style,
                    color=colours[engine], label=key)  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("documents")
        ax.grid(True, which="both", alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("baihua stores against size (solid: whitened dims, dashed: the encoder's own)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


# -------------------------------------------------------------------------------------- main


def read_results(path: Path, setup: Setup | None) -> dict[str, Any]:
    results = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    if setup is not None:
        recorded = results.get("setup")
        if recorded is not None and recorded != dataclasses.asdict(setup):
            sys.exit(f"{path} holds results of another setup ({recorded}); use another --out")
        results["setup"] = dataclasses.asdict(setup)
    return results


def write_record(path: Path, results: dict[str, Any], key: str, size: int, record: dict) -> None:
    """Add one record to the file as it is now (another run may have added others)."""
    current = read_results(path, None)
    current["runs"].setdefault(key, {})[str(size)] = record
    current.update({k: v for k, v in results.items() if k != "runs"})
    results["runs"] = current["runs"]
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(current, indent=1, ensure_ascii=False))
    tmp.replace(path)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/senteval_cn"))
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--engines", default="faiss-flat,faiss-hnsw32,faiss-ivfpq,milvus-ivf",
                        help=f"of {', '.join(ENGINES)}")  # fmt: skip
    parser.add_argument("--dims", default="384,128", help="384 raw, fewer: whitened")
    parser.add_argument("--out", type=Path, default=Path("docs/results-scale.json"))
    parser.add_argument("--work-dir", type=Path, default=Path.home() / ".cache/baihua/scale")
    parser.add_argument("--plot", type=Path, default=Path("docs/plots/scale.png"))
    parser.add_argument("--machine", default="", help="a note on the machine, e.g. 'shared'")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--searches", type=int, default=400, help="per client count")
    parser.add_argument("--filtered-searches", type=int, default=100)
    parser.add_argument("--page", type=int, default=1000, help="documents per scan page")
    parser.add_argument("--snapshot-margin-s", type=float, default=1.0)
    parser.add_argument(
        "--write-rate", type=float, default=20.0, help="payload writes/s during the snapshot"
    )
    parser.add_argument("--fit-sentences", type=int, default=10000)
    parser.add_argument("--max-real", type=int, default=0, help="cap on real documents (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--drop-stores",
        action="store_true",
        help="delete each store once its largest size is measured (no growing it later)",
    )
    parser.add_argument("--faiss-threads", type=int, default=1)
    parser.add_argument("--backend", default="", help="encoder backend (default: the service's)")
    parser.add_argument("--dtype", default="")
    parser.add_argument("--report", action="store_true", help="only print tables, write plots")
    parser.add_argument(
        "--also",
        type=Path,
        action="append",
        default=[],
        help="with --report: more result files whose sizes join the same curves",
    )
    args = parser.parse_args()
    args.sizes = sorted(int(s) for s in args.sizes.split(","))
    args.dims = [int(d) for d in args.dims.split(",")]
    unknown = set(args.engines.split(",")) - set(ENGINES)
    if unknown:
        parser.error(f"unknown engines {sorted(unknown)}; choose from {', '.join(ENGINES)}")
    args.engines = [ENGINES[e] for e in args.engines.split(",")]
    return args


def main() -> None:
    args = parse_args()
    if args.report:
        results = read_results(args.out, None)
        for extra in args.also:
            for key, by_size in read_results(extra, None)["runs"].items():
                results["runs"].setdefault(key, {}).update(by_size)
        print("\n".join(tables(results)))
        plot(results, args.plot)
        return
    started = time.perf_counter()
    setup, info = prepare(args)
    print(f"[prepare] {time.perf_counter() - started:.1f} s; {setup.n_real:,} real documents, "
          f"setup {setup.key}", flush=True)  # fmt: skip
    results = read_results(args.out, setup)
    if args.machine:
        results["machine"] = args.machine
    for engine in args.engines:
        for dim in args.dims:
            key = f"{engine.name}@{dim}"
            for size in args.sizes:
                if str(size) in results["runs"].get(key, {}):
                    print(f"[skip] {key} {size:,}: recorded")
                    continue
                if str(size) in read_results(args.out, None)["runs"].get(key, {}):
                    print(f"[skip] {key} {size:,}: recorded by another run")
                    continue
                record = measure_size(engine, dim, size, setup, info, args)
                write_record(args.out, results, key, size, record)
            if args.drop_stores:  # disk: at 1M a 384-dim FAISS store takes ~3.5 GB
                shutil.rmtree(store_path(args, setup, engine, dim), ignore_errors=True)
                total = sum(record["steps_s"].values())
                print(f"[done] {key} {size:,} in {total:.0f} s", flush=True)
    print("\n".join(tables(results)))
    plot(results, args.plot)
    print(f"[total] {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
