"""A crash-loop soak: one client writes to a real `baihua serve` (a random mix of add, upsert,
delete, delete-by-filter and payload patch) and keeps the log of what was acknowledged; the
server is killed with SIGKILL at random moments (while writing, during the snapshot of a
shutdown, while a restart loads or rebuilds the index), restarted, and after each restart the
invariants are checked against the log:

- every acknowledged document is present with its latest text and payload, no deleted one is
  back, no id is listed twice, and no id appears that no request named (a phantom); the one
  request in flight at a kill may or may not have applied, so its ids may be in either state;
- `count` = a full `GET /documents` scan = the index's size (`baihua_index_documents`);
- every stored vector equals re-encoding its text (cosine >= 0.9999): on FAISS read from its
  SQLite database while the server runs, on the embedded Milvus engine from its file just
  before the restart (one process owns it);
- search recall@10 against exact search over the re-encoded vectors is 1 (Flat indexes).

Used by tests/app/test_crash_soak.py (short) and bench/crash_soak.py (long).
"""

from __future__ import annotations

import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from baihua.encoder import EmbeddingPipeline
from baihua.serving.components import build_pipeline
from baihua.serving.settings import load_settings
from tests.serve_process import ServeProcess

GROUPS = 12  # payload "group" values: a delete-by-filter removes about 1/12 of the documents
WORDS = [
    "hello",
    "world",
    "bert",
    "的",
    "一",
    "是",
    "不",
    "了",
    "人",
    "我",
    "在",
    "有",
    "他",
    "这",
    "中",
    "大",
    "来",
    "上",
]

Doc = tuple[str, dict[str, Any]]  # text, payload
ABSENT = None  # a possible state: not stored


@dataclass
class Report:
    kills: int = 0
    kills_in_snapshot: int = 0
    kills_in_startup: int = 0
    acknowledged: int = 0  # write requests answered 2xx
    unacknowledged: int = 0  # in flight at a kill
    checked_documents: int = 0  # documents compared after restarts, summed
    checked_vectors: int = 0
    engine_exit_s: float = 0.0  # the longest wait for a killed server's engine to exit
    failures: list[str] = field(default_factory=list)

    def line(self, engine: str) -> str:
        return (
            f"{engine}: {self.kills} kills survived ({self.kills_in_snapshot} during a shutdown "
            f"snapshot, {self.kills_in_startup} during a restart's load); "
            f"{self.acknowledged} acknowledged writes, {self.unacknowledged} in flight at a kill; "
            f"{self.checked_documents} documents and {self.checked_vectors} vectors checked; "
            f"killed engines exited within {self.engine_exit_s:.1f} s; "
            f"{len(self.failures)} failures"
        )


class Expected:
    """What the acknowledged log says is stored: each id's state, or several possible states
    for the ids the request in flight at a kill touched."""

    def __init__(self) -> None:
        self.docs: dict[int, Doc] = {}
        self.uncertain: dict[int, list[Doc | None]] = {}
        self.floating: list[Doc] = []  # documents of an unanswered add without ids
        self.next_id = 0

    def possible(self, id: int) -> list[Doc | None]:
        if id in self.uncertain:
            return self.uncertain[id]
        return [self.docs.get(id, ABSENT)]

    def maybe(self, id: int, state: Doc | None) -> None:
        """The unanswered request may have set ``id`` to ``state``."""
        options = self.uncertain.setdefault(id, [self.docs.get(id, ABSENT)])
        options.append(state)

    def settle(self, id: int, state: Doc | None) -> None:
        """An acknowledged write (or an observation after a restart) fixes ``id``'s state."""
        self.uncertain.pop(id, None)
        if state is ABSENT:
            self.docs.pop(id, None)
        else:
            self.docs[id] = state


class Unanswered(Exception):
    """A write the server did not acknowledge without the connection failing."""


class Client:
    """The one writer: random operations, each logged as acknowledged or in flight."""

    def __init__(self, url: str, expected: Expected, rng: random.Random, report: Report) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)
        self.expected, self.rng, self.report = expected, rng, report
        self.version = 0
        self.stopping = threading.Event()  # set once the server was told to shut down

    def close(self) -> None:
        self.http.close()

    def run_until_gone(self, stop: threading.Event) -> None:
        """Write until the server is gone (a transport error) or ``stop`` is set."""
        while not stop.is_set():
            operation = self.rng.choices(
                [self.add, self.add_assigned, self.upsert, self.delete, self.delete_where,
                 self.patch],
                weights=[5, 2, 3, 2, 1, 2],
            )[0]  # fmt: skip
            try:
                operation()
            except (httpx.TransportError, Unanswered):
                self.report.unacknowledged += 1
                return

    # ----------------------------------------------------------------------------- operations

    def _doc(self) -> Doc:
        self.version += 1
        text = " ".join(self.rng.choices(WORDS, k=self.rng.randint(1, 6))) + f" {self.version}"
        payload = {"group": self.rng.randrange(GROUPS), "v": self.version}
        return text, payload

    def _post(self, path: str, body: dict[str, Any], expect: int) -> dict[str, Any]:
        response = self.http.post(path, json=body)
        self._check(response, expect)
        return dict(response.json())

    def _check(self, response: httpx.Response, expect: int) -> None:
        if response.status_code == 503 and self.stopping.is_set():
            raise Unanswered  # refused by a draining server: not acknowledged
        if response.status_code != expect:
            self.report.failures.append(f"{response.request.method} {response.request.url}: "
                                        f"{response.status_code} {response.text}")  # fmt: skip
            raise Unanswered
        self.report.acknowledged += 1

    def _known_ids(self, n: int) -> list[int]:
        known = sorted(self.expected.docs)
        return self.rng.sample(known, min(n, len(known)))

    def add(self) -> None:
        """New documents with ids the client picks."""
        docs = [self._doc() for _ in range(self.rng.randint(1, 8))]
        ids = list(range(self.expected.next_id, self.expected.next_id + len(docs)))
        self.expected.next_id += len(docs)
        for id, doc in zip(ids, docs, strict=True):
            self.expected.maybe(id, doc)
        body = [{"id": i, "text": t, "payload": p} for i, (t, p) in zip(ids, docs, strict=True)]
        self._post("/documents", {"documents": body}, 201)
        for id, doc in zip(ids, docs, strict=True):
            self.expected.settle(id, doc)

    def add_assigned(self) -> None:
        """New documents whose ids the server assigns."""
        docs = [self._doc() for _ in range(self.rng.randint(1, 4))]
        self.expected.floating = docs
        body = [{"text": t, "payload": p} for t, p in docs]
        ids = self._post("/documents", {"documents": body}, 201)["ids"]
        self.expected.floating = []
        for id, doc in zip(ids, docs, strict=True):
            self.expected.settle(id, doc)
        self.expected.next_id = max(self.expected.next_id, max(ids) + 1)

    def upsert(self) -> None:
        ids = self._known_ids(self.rng.randint(1, 4))
        if not ids or self.rng.random() < 0.5:
            ids.append(self.expected.next_id)  # a new one, stored by the upsert
            self.expected.next_id += 1
        docs = [self._doc() for _ in ids]
        for id, doc in zip(ids, docs, strict=True):
            self.expected.maybe(id, doc)
        body = [{"id": i, "text": t, "payload": p} for i, (t, p) in zip(ids, docs, strict=True)]
        self._post("/documents", {"documents": body, "upsert": True}, 201)
        for id, doc in zip(ids, docs, strict=True):
            self.expected.settle(id, doc)

    def delete(self) -> None:
        ids = self._known_ids(self.rng.randint(1, 3))
        if not ids:
            return
        for id in ids:
            self.expected.maybe(id, ABSENT)
        if len(ids) == 1 and self.rng.random() < 0.5:
            self._check(self.http.delete(f"/documents/{ids[0]}"), 200)
        else:
            deleted = self._post("/documents/delete", {"ids": ids}, 200)["deleted"]
            assert deleted == len(ids), (deleted, ids)
        for id in ids:
            self.expected.settle(id, ABSENT)

    def delete_where(self) -> None:
        group = self.rng.randrange(GROUPS)
        doomed = [i for i, (_, p) in self.expected.docs.items() if p["group"] == group]
        for id in doomed:
            self.expected.maybe(id, ABSENT)
        deleted = self._post("/documents/delete", {"filter": {"group": group}}, 200)["deleted"]
        assert deleted == len(doomed), (deleted, len(doomed), group)
        for id in doomed:
            self.expected.settle(id, ABSENT)

    def patch(self) -> None:
        ids = self._known_ids(1)
        if not ids:
            return
        text, _ = self.expected.docs[ids[0]]
        self.version += 1
        payload = {"group": self.rng.randrange(GROUPS), "v": self.version, "patched": True}
        self.expected.maybe(ids[0], (text, payload))
        response = self.http.patch(f"/documents/{ids[0]}", json={"payload": payload})
        self._check(response, 200)
        self.expected.settle(ids[0], (text, payload))


class Checker:
    """The invariants after a restart, against the log and against re-encoding."""

    def __init__(self, pipeline: EmbeddingPipeline, report: Report) -> None:
        self.pipeline, self.report = pipeline, report

    def check(
        self, url: str, expected: Expected, vectors: Callable[[], dict[int, np.ndarray]] | None
    ) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            listed = scan(http)
            ids = [d["id"] for d in listed]
            self._assert(len(ids) == len(set(ids)), f"ids listed twice: {_repeated(ids)}")
            observed = {d["id"]: (d["text"], d["payload"]) for d in listed}
            self._compare(observed, expected)
            count = http.get("/documents/count").json()["count"]
            size = index_size(http)
            self._assert(
                count == len(observed) == size,
                f"count {count}, scan {len(observed)}, index size {size}",
            )
            self.report.checked_documents += len(observed)
            if vectors is not None and observed:
                stored = vectors()
                self._assert(
                    set(stored) == set(observed), "the database's ids differ from /documents"
                )
                self._check_vectors(http, observed, stored)

    def _compare(self, observed: dict[int, Doc], expected: Expected) -> None:
        floating = list(expected.floating)
        for id in sorted(set(observed) | set(expected.docs) | set(expected.uncertain)):
            state = observed.get(id, ABSENT)
            possible = expected.possible(id)
            if state in possible:
                expected.settle(id, state)
            elif id not in expected.docs and id not in expected.uncertain and state in floating:
                floating.remove(state)  # the unanswered add without ids did apply
                expected.settle(id, state)
            elif state is ABSENT:
                self._fail(f"id {id} lost: expected {possible}")
            elif all(p is ABSENT for p in possible):
                self._fail(f"id {id} is a phantom or came back after its delete: {state}")
            else:
                self._fail(f"id {id} is {state}, expected one of {possible}")
        expected.floating = []
        if observed:
            expected.next_id = max(expected.next_id, max(observed) + 1)

    def _check_vectors(
        self, http: httpx.Client, observed: dict[int, Doc], stored: dict[int, np.ndarray]
    ) -> None:
        ids = sorted(observed)
        texts = [observed[i][0] for i in ids]
        fresh = self.pipeline.embed(texts, text_type="passage").vectors
        kept = np.stack([stored[i] for i in ids])
        cosine = np.sum(fresh * kept, axis=1) / (
            np.linalg.norm(fresh, axis=1) * np.linalg.norm(kept, axis=1)
        )
        bad = [i for i, c in zip(ids, cosine, strict=True) if not c >= 0.9999]
        self._assert(not bad, f"stored vectors differ from re-encoding their text: {bad[:10]}")
        self.report.checked_vectors += len(ids)
        queries = [" ".join(WORDS[i : i + 3]) for i in range(0, 12, 3)]
        embedded = self.pipeline.embed(queries, text_type="query").vectors
        for query, vector in zip(queries, embedded, strict=True):
            exact = fresh @ vector
            top = min(10, len(ids))
            threshold = np.sort(exact)[::-1][top - 1] - 1e-4
            body = {"query": query, "top_k": 10, "mode": "dense"}  # recall against exact dense
            hits = http.post("/search", json=body).json()["results"]
            good = sum(1 for h in hits if exact[ids.index(h["id"])] >= threshold)
            self._assert(good == top, f"recall@10 {good}/{top} for {query!r}")

    def _assert(self, condition: bool, message: str) -> None:
        if not condition:
            self._fail(message)

    def _fail(self, message: str) -> None:
        self.report.failures.append(f"after kill {self.report.kills}: {message}")


def scan(http: httpx.Client) -> list[dict[str, Any]]:
    """Every document, page by page (a small page size: many pages)."""
    documents: list[dict[str, Any]] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 37} | ({} if after is None else {"after": after})
        page = http.get("/documents", params=params).json()
        documents += page["documents"]
        if page["next_after"] is None:
            return documents
        after = page["next_after"]


def index_size(http: httpx.Client) -> int:
    found = re.search(r"^baihua_index_documents (\S+)$", http.get("/metrics").text, re.M)
    assert found is not None
    return int(float(found.group(1)))


def sqlite_vectors(database: Path) -> Callable[[], dict[int, np.ndarray]]:
    """The vectors the FAISS store's database holds, read through a read-only connection."""

    def read() -> dict[int, np.ndarray]:
        db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT id, vector FROM documents").fetchall()
        finally:
            db.close()
        return {i: np.frombuffer(blob, dtype="<f4") for i, blob in rows}

    return read


def milvus_vectors(database: Path, dim: int) -> dict[int, np.ndarray]:
    """The vectors the embedded Milvus engine's file holds, read by opening it in this process:
    one process owns the file, so call it while no server runs (the soak reads them before each
    restart; nothing writes documents between that and the check)."""
    from baihua.index.milvus_store import MilvusStore

    with MilvusStore(str(database), dim) as store:
        ids = store.ids()
        return dict(zip(ids.tolist(), store.vectors(ids), strict=True)) if len(ids) else {}


def _repeated(ids: list[int]) -> list[int]:
    seen: set[int] = set()
    return sorted({i for i in ids if i in seen or seen.add(i)})  # type: ignore[func-returns-value]


def kill(server: ServeProcess, report: Report) -> None:
    """SIGKILL the server, then wait for the processes it started (the embedded Milvus
    engine's binary, which stops about a second after its parent dies): a restart that opens
    the file while the old binary still runs can hang for minutes."""
    assert server.process is not None
    try:
        children = psutil.Process(server.process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    server.kill()
    start = time.monotonic()
    _, alive = psutil.wait_procs(children, timeout=60)
    report.engine_exit_s = max(report.engine_exit_s, time.monotonic() - start)
    for process in alive:
        report.failures.append(f"process {process.pid} outlived its killed server by 60 s")
        process.kill()


def tiny_pipeline(model: Path) -> EmbeddingPipeline:
    """The pipeline `baihua serve` builds from tests/serve_process.tiny_env, in this process."""
    settings = load_settings(
        model=str(model), pooling="last-avg", max_length=16, device="cpu", backend="torch"
    )
    return build_pipeline(settings)


def soak(
    model: Path,
    work: Path,
    *,
    kills: int,
    engine: str = "faiss",
    seed: int = 0,
    log: Callable[[str], None] = lambda line: None,
) -> Report:
    """Run ``kills`` kill-restart cycles of a server on ``work``/data; the report."""
    rng = random.Random(seed)
    report = Report()
    expected = Expected()
    checker = Checker(tiny_pipeline(model), report)
    env = {"BAIHUA_INDEX_BACKEND": engine} if engine != "faiss" else {}
    data = work / "data"
    pipeline = checker.pipeline

    def stored_before_start() -> Callable[[], dict[int, np.ndarray]]:
        """What the check compares with re-encoding: on FAISS the database, read while the
        server runs; on Milvus the file, read now, before the server takes it."""
        if engine == "faiss":
            return sqlite_vectors(data / "index" / "documents.sqlite")
        database = data / "index" / "milvus.db"
        stored = milvus_vectors(database, pipeline.dim) if database.exists() else {}
        return lambda: stored

    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cycle = 0
    while report.kills < kills:
        cycle += 1
        server = ServeProcess(model, data, logs / f"serve-{cycle}.log", **env)
        if cycle > 1 and rng.random() < 0.15:  # kill while the restart loads the index
            server.start(ready=False)
            time.sleep(rng.uniform(0.5, 4.0))
            if not server.ready():
                kill(server, report)
                report.kills += 1
                report.kills_in_startup += 1
                log(f"kill {report.kills}: during start-up")
                continue
            kill(server, report)
            report.kills += 1
            continue
        vectors = stored_before_start()
        try:
            server.start()
        except (TimeoutError, RuntimeError) as error:  # never ready, or exited
            server.kill()
            report.failures.append(f"restart after kill {report.kills}: {error}")
            return report
        checker.check(server.url, expected, vectors)
        if report.failures:
            server.kill()
            log(f"FAILED after kill {report.kills}: {report.failures}")
            return report
        client = Client(server.url, expected, rng, report)
        stop = threading.Event()
        writer = threading.Thread(target=client.run_until_gone, args=(stop,))
        writer.start()
        time.sleep(rng.uniform(0.3, 3.0))
        if rng.random() < 0.25:  # a shutdown's snapshot, killed part-way
            client.stopping.set()
            server.process.send_signal(15)  # type: ignore[union-attr]
            time.sleep(rng.uniform(0.0, 0.6))
            report.kills_in_snapshot += 1
        kill(server, report)
        stop.set()
        writer.join(timeout=60)
        client.close()
        report.kills += 1
        log(f"kill {report.kills}: {report.acknowledged} acknowledged, "
            f"{len(expected.docs)} documents")  # fmt: skip
    vectors = stored_before_start()
    server = ServeProcess(model, data, logs / "serve-final.log", **env).start()
    try:
        checker.check(server.url, expected, vectors)
    finally:
        server.kill()
    return report
