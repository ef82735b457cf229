"""Acknowledged writes survive a server killed without shutdown (no index snapshot saved); ids
are never reused and span int64; a store whose database is gone is refused, not served empty."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np

from baihua.app.main import create_app
from baihua.index import FaissStore
from tests.app.conftest import StartServer, base_settings, running_server, wait_until
from tests.conftest import WHITENED_DIM

SERVE = """
import sys, uvicorn
from baihua.app.main import create_app
from baihua.serving.settings import Settings
settings = Settings(
    model=sys.argv[1], pooling="last-avg", max_length=16, device="cpu", data_dir=sys.argv[2]
)  # the space of base_settings, which reopens the index below
uvicorn.run(create_app(settings), host="127.0.0.1", port=int(sys.argv[3]), log_level="warning")
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz").status_code == 200
    except httpx.TransportError:
        return False


def test_documents_survive_a_killed_server(tiny_bert: Path, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", SERVE, str(tiny_bert), str(tmp_path), str(port)]
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[2])
    try:
        wait_until(lambda: is_ready(url) or process.poll() is not None, "never ready", 120)
        documents = [{"text": f"hello {i}", "payload": {"i": i}} for i in range(5)]
        added = httpx.post(f"{url}/documents", json={"documents": documents})
        assert added.status_code == 201
        ids = added.json()["ids"]
    finally:
        process.kill()  # SIGKILL: no lifespan shutdown, no store.save()
        process.wait(timeout=30)

    settings = base_settings(tiny_bert, data_dir=tmp_path)
    with running_server(create_app(settings)) as url:
        for i, id in enumerate(ids):
            assert httpx.get(f"{url}/documents/{id}").json()["payload"] == {"i": i}
        hits = httpx.post(f"{url}/search", json={"query": "hello", "top_k": 10}).json()
        assert sorted(hit["id"] for hit in hits["results"]) == sorted(ids)


def test_kill_9_during_writes_and_deletes_loses_no_acknowledged_change(
    tiny_bert: Path, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", SERVE, str(tiny_bert), str(tmp_path), str(port)]
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[2])
    added: set[int] = set()
    deleted: set[int] = set()
    deleting: set[int] = set()  # sent, not acknowledged: either outcome is right
    stop = threading.Event()

    def writer(worker: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            while not stop.is_set():
                try:
                    docs = [{"text": f"doc {worker}", "payload": {"w": worker}}] * 3
                    response = http.post("/documents", json={"documents": docs})
                    if response.status_code == 201:
                        ids = response.json()["ids"]
                        added.update(ids)
                        deleting.add(ids[0])
                        if http.delete(f"/documents/{ids[0]}").status_code == 200:
                            deleted.add(ids[0])
                            deleting.discard(ids[0])
                except httpx.TransportError:
                    return  # the server is gone

    try:
        wait_until(lambda: is_ready(url) or process.poll() is not None, "never ready", 120)
        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(deleted) >= 20, "no writes got through", 60)
    finally:
        process.kill()  # mid-stream: some requests are in flight
        process.wait(timeout=30)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    settings = base_settings(tiny_bert, data_dir=tmp_path)
    with running_server(create_app(settings)) as new, httpx.Client(base_url=new) as http:
        kept = added - deleted - deleting
        for id in kept:
            assert http.get(f"/documents/{id}").status_code == 200, id
        for id in deleted:
            assert http.get(f"/documents/{id}").status_code == 404, id
        hits = http.post("/search", json={"query": "doc", "top_k": 1000}).json()["results"]
        assert {hit["id"] for hit in hits} >= kept
        assert not {hit["id"] for hit in hits} & deleted
        # a new id is above every id ever acknowledged, deleted ones included
        new = http.post("/documents", json={"documents": [{"text": "new"}]}).json()["ids"][0]
        assert new > max(added)


def test_ids_span_the_api_range_without_5xx(start_server: StartServer) -> None:
    # the API's ids stop at 2**53 - 1, the largest integer every JSON client keeps exact
    url = start_server()
    with httpx.Client(base_url=url) as http:
        largest = 2**53 - 1
        body = {"documents": [{"id": largest, "text": "the last id"}]}
        assert http.post("/documents", json=body).json()["ids"] == [largest]
        assert http.get(f"/documents/{largest}").json()["text"] == "the last id"
        exhausted = http.post("/documents", json={"documents": [{"text": "no id left"}]})
        assert exhausted.status_code == 409 and "2**53 - 1" in exhausted.json()["detail"]
        assert (
            http.post("/documents", json={"documents": [{"id": 5, "text": "given"}]}).status_code
            == 201
        )
        assert http.delete(f"/documents/{largest}").status_code == 200
        assert http.get(f"/documents/{largest + 1}").status_code == 422


def test_a_data_dir_without_its_database_is_refused_and_keeps_its_snapshot(
    start_server: StartServer, tmp_path: Path
) -> None:
    index_dir = tmp_path / "data" / "index"
    with FaissStore.open(index_dir, WHITENED_DIM) as store:
        store.add([1], np.eye(1, WHITENED_DIM, dtype=np.float32), ["a"])
        store.save()
    for file in index_dir.glob("documents.sqlite*"):
        file.unlink()
    url = start_server(data_dir=tmp_path / "data", ready=False)
    wait_until(lambda: "failed" in httpx.get(f"{url}/readyz").text, "loading never failed", 60)
    reason = httpx.get(f"{url}/readyz").json()["status"]
    assert "StoreCorruptError" in reason and "documents.sqlite" in reason and "missing" in reason
    assert httpx.post(f"{url}/search", json={"query": "a"}).status_code == 503
    assert (index_dir / "snapshot.json").is_file()
    assert not (index_dir / "documents.sqlite").exists()


def test_ids_deleted_by_filter_or_in_a_batch_are_not_reused_after_a_restart(
    tiny_bert: Path, tmp_path: Path
) -> None:
    settings = base_settings(tiny_bert, data_dir=tmp_path)
    docs = [{"text": f"doc {i}", "payload": {"g": i % 2}} for i in range(6)]
    with running_server(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        assert http.post("/documents", json={"documents": docs}).json()["ids"] == list(range(6))
        deleted = http.post("/documents/delete", json={"filter": {"g": 1}})  # 1, 3 and 5
        assert deleted.json() == {"deleted": 3}
        assert http.post("/documents", json={"documents": docs[:2]}).json()["ids"] == [6, 7]
        assert http.post("/documents/delete", json={"ids": [7, 6]}).json() == {"deleted": 2}
    with running_server(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        assert http.get("/documents/count").json() == {"count": 3}
        new = http.post("/documents", json={"documents": [{"text": "new"}]}).json()["ids"]
        assert new == [8]  # above 7, the largest id ever handed out, though deleted
