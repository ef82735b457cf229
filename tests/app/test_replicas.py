"""Several `baihua serve` replicas on one Milvus server (a gRPC server on a loopback port), as a
user scaling past one machine runs them: concurrent writes through all of them, then the
invariants Qdrant's crash tester checks — no id twice, count = full scan on every replica, every
acknowledged document readable from every replica — and no 409 for a request without ids."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import wait_until
from tests.app.test_crash import free_port, is_ready
from tests.conftest import MAX_LENGTH

REPO = Path(__file__).resolve().parents[2]
Replicas = Callable[[int], list[str]]


@pytest.fixture
def replicas(milvus_server: str, tiny_bert: Path, tmp_path: Path) -> Iterator[Replicas]:
    """`replicas(n)` starts n `baihua serve` processes on one collection of the Milvus server
    and returns their base URLs; all are stopped at the end."""
    collection = f"replicas_{uuid.uuid4().hex}"
    processes: list[subprocess.Popen[bytes]] = []

    def start(n: int) -> list[str]:
        urls = []
        for _ in range(n):
            port = free_port()
            env = os.environ | {
                "BAIHUA_MODEL": str(tiny_bert),
                "BAIHUA_POOLING": "last-avg",
                "BAIHUA_MAX_LENGTH": str(MAX_LENGTH),
                "BAIHUA_DEVICE": "cpu",
                "BAIHUA_NUM_THREADS": "1",
                "BAIHUA_DATA_DIR": str(tmp_path / f"replica-{len(processes)}"),
                "BAIHUA_INDEX_BACKEND": "milvus",
                "BAIHUA_MILVUS_URI": milvus_server,
                "BAIHUA_MILVUS_COLLECTION": collection,
            }
            baihua = Path(sys.executable).with_name("baihua")
            command = [str(baihua), "serve", "--port", str(port)]
            processes.append(subprocess.Popen(command, cwd=REPO, env=env))
            urls.append(f"http://127.0.0.1:{port}")
        for url, process in zip(urls, processes[-n:], strict=True):
            wait_until(
                lambda u=url, p=process: is_ready(u) or p.poll() is not None, "never ready", 180
            )
            assert process.poll() is None, f"the replica at {url} exited"
        return urls

    yield start
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def full_scan(url: str) -> list[int]:
    """Every id `GET /documents` pages through, repeats kept."""
    ids: list[int] = []
    after = None
    while True:
        params = {"limit": 1000} | ({} if after is None else {"after": after})
        page = httpx.get(f"{url}/documents", params=params, timeout=60).json()
        ids += [doc["id"] for doc in page["documents"]]
        if (after := page["next_after"]) is None:
            return ids


def count(url: str) -> int:
    return int(httpx.get(f"{url}/documents/count", timeout=60).json()["count"])


def post(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=120)


def test_concurrent_writes_through_two_replicas_keep_every_invariant(
    replicas: Replicas,
) -> None:
    urls = replicas(2)
    turn = itertools.cycle(urls)
    # Without ids, alternating replicas; the same explicit ids added and upserted through both
    # replicas at once (the race); all in one pool so they interleave.
    Job = tuple[str, str, dict]  # kind, replica, body
    jobs: list[Job] = []
    for i in range(120):
        body = {"documents": [{"text": f"auto {i}", "payload": {"i": i}}]}
        jobs.append(("auto", next(turn), body))
    for i in range(40):
        for url in urls:
            body = {"documents": [{"id": 10_000_000 + i, "text": f"given {i} via {url[-5:]}"}]}
            jobs.append(("given", url, body))
            upsert = {"documents": [{"id": 20_000_000 + i, "text": f"upsert {i}"}], "upsert": True}
            jobs.append(("upsert", url, upsert))
    order = sorted(range(len(jobs)), key=lambda j: (j * 7919) % len(jobs))

    def send(job: Job) -> tuple[Job, httpx.Response]:
        return job, post(job[1], "/documents", job[2])

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(send, [jobs[j] for j in order]))

    statuses: dict[str, dict[int, int]] = {}
    for (kind, *_), response in answers:
        statuses.setdefault(kind, {}).setdefault(response.status_code, 0)
        statuses[kind][response.status_code] += 1
    auto = {  # id: the document's "i"
        response.json()["ids"][0]: body["documents"][0]["payload"]["i"]
        for (kind, _, body), response in answers
        if kind == "auto" and response.status_code == 201
    }
    acknowledged = [
        id
        for (kind, *_), response in answers
        if kind == "auto" and response.status_code == 201
        for id in response.json()["ids"]
    ]
    added: dict[int, list[str]] = {}  # id: the texts of the adds acknowledged (auto and given)
    for (kind, _, body), response in answers:
        if kind != "upsert" and response.status_code == 201:
            added.setdefault(response.json()["ids"][0], []).append(body["documents"][0]["text"])
    given = {10_000_000 + i for i in range(40)}
    upserted = {20_000_000 + i: f"upsert {i}" for i in range(40)}
    replaced = set(auto) & set(upserted)  # an upsert of an id handed out a moment before
    print(f"statuses {statuses}; automatic ids {len(acknowledged)}, distinct {len(auto)}")
    print(f"automatic ids given explicitly too: {sorted(set(auto) & (given | set(upserted)))}")
    assert statuses["auto"] == {201: 120}, "a request without ids is never refused"
    assert len(auto) == len(acknowledged) == 120, "no automatic id handed out twice"
    assert set(statuses["upsert"]) == {201}
    assert set(statuses["given"]) <= {201, 409}
    assert {id: texts for id, texts in added.items() if len(texts) > 1} == {}, "added twice"
    assert given <= set(added), "every given id was added once, by a request with or without it"

    # Deletes through both replicas: by id, a batch, and by filter.
    doomed = sorted(id for id, i in auto.items() if i < 100)[:10]
    for n, id in enumerate(doomed[:5]):
        assert httpx.delete(f"{urls[n % 2]}/documents/{id}").status_code == 200
    assert post(urls[1], "/documents/delete", {"ids": doomed[5:]}).json()["deleted"] == 5
    matching = {id for id, i in auto.items() if i >= 110} - replaced
    late = {"filter": json.dumps({"i": {"$gte": 110}})}
    assert httpx.get(f"{urls[1]}/documents/count", params=late).json()["count"] == len(matching)
    deleted = post(urls[0], "/documents/delete", {"filter": {"i": {"$gte": 110}}}).json()
    assert deleted["deleted"] == len(matching)

    expected = (set(auto) | given | set(upserted)) - set(doomed) - matching
    texts = {id: texts[0] for id, texts in added.items()} | upserted
    for url in urls:
        scanned = full_scan(url)
        print(f"{url}: count {count(url)}, scan {len(scanned)}, distinct {len(set(scanned))}")
        assert len(scanned) == len(set(scanned)), "no id twice"
        assert count(url) == len(scanned) == len(expected), "count = full scan"
        assert set(scanned) == expected
        assert httpx.get(f"{url}/documents/count", params=late).json()["count"] == 0
        found = post(url, "/documents/get", {"ids": sorted(expected)}).json()
        assert found["missing"] == []
        read = {doc["id"]: doc["text"] for doc in found["documents"]}
        assert read == {id: texts[id] for id in expected}, "each document as last acknowledged"
        for doc in found["documents"]:
            if doc["id"] in set(auto) - replaced:
                assert doc["payload"] == {"i": auto[doc["id"]]}


def test_a_write_acknowledged_by_one_replica_is_read_by_the_other_at_once(
    replicas: Replicas,
) -> None:
    """Strong consistency: the first read on the other replica after the acknowledgement sees
    the write (get, count, search); the time printed is acknowledgement to that read's answer."""
    writer, reader = replicas(2)
    latencies = []
    for i in range(20):
        text = f"hello world {i} 的一是"
        added = post(writer, "/documents", {"documents": [{"text": text}]})
        acknowledged = time.monotonic()
        id = added.json()["ids"][0]
        assert httpx.get(f"{reader}/documents/{id}").json()["text"] == text
        latencies.append(time.monotonic() - acknowledged)
        assert count(reader) == i + 1
        hits = post(reader, "/search", {"query": text, "top_k": 50}).json()["results"]
        assert id in [hit["id"] for hit in hits]
    print(
        f"read-your-writes on the other replica: first read found every write; ack to answer "
        f"median {sorted(latencies)[10] * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
    )


def test_geodesic_rerank_is_refused_on_a_shared_milvus_server(replicas: Replicas) -> None:
    (url,) = replicas(1)
    response = post(url, "/search", {"query": "hello", "rerank": "geodesic"})
    assert response.status_code == 422
    assert "not available on a shared index" in response.text
    assert post(url, "/search", {"query": "hello"}).status_code == 200
