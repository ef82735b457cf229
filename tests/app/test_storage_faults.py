"""A real `baihua serve` on a disk that fills up or turns read-only or vanishes: writes are
refused (507 for a full disk, 503 otherwise) with a message naming the directory, nothing
acknowledged is lost, reads keep working, writes work again once the disk is fixed, and no
traceback reaches the log. Needs root (tmpfs and bind mounts)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from tests.serve_process import (
    ServeProcess,
    can_mount,
    fill_disk,
    free_disk,
    read_only,
    run_baihua,
    small_tmpfs,
    tiny_env,
)

pytestmark = pytest.mark.skipif(not can_mount(), reason="needs root to mount a tmpfs")

ENGINES = {"faiss": {}, "milvus": {"BAIHUA_INDEX_BACKEND": "milvus"}}  # milvus: embedded file


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def add(http: httpx.Client, texts: list[str]) -> httpx.Response:
    documents = [{"text": t, "payload": {"t": t[:20]}} for t in texts]
    return http.post("/documents", json={"documents": documents})


def stored(http: httpx.Client) -> dict[int, str]:
    documents, after = {}, None
    while True:
        params = {"limit": 1000} | ({} if after is None else {"after": after})
        page = http.get("/documents", params=params).json()
        documents.update({d["id"]: d["text"] for d in page["documents"]})
        if page["next_after"] is None:
            return documents
        after = page["next_after"]


def no_traceback(server: ServeProcess) -> None:
    assert "Traceback" not in server.output(), server.output()


def test_a_full_disk_refuses_writes_with_507_and_keeps_everything(
    tiny_bert: Path, tmp_path: Path, engine: str
) -> None:
    env = ENGINES[engine]
    with small_tmpfs(tmp_path / "disk", "8m") as disk:
        server = ServeProcess(tiny_bert, disk / "data", tmp_path / "serve0.log", **env).start()
        try:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                acknowledged: dict[int, str] = {}
                texts = [f"hello world {i} " + "的一是不了人" * 100 for i in range(20)]
                response = add(http, texts)
                assert response.status_code == 201
                acknowledged.update(zip(response.json()["ids"], texts, strict=True))
            assert server.stop() == 0  # a first snapshot, which a failed one must keep
            server = ServeProcess(tiny_bert, disk / "data", tmp_path / "serve.log", **env).start()
            with httpx.Client(base_url=server.url, timeout=30) as http:
                fill_disk(disk)
                refused = add(http, [f"bert {i} " + "中大来上" * 300 for i in range(50)])
                assert refused.status_code == 507, refused.text
                message = refused.json()["detail"]
                assert "no space left" in message and str(disk / "data" / "index") in message
                patch = http.patch(f"/documents/{min(acknowledged)}", json={"payload": {"x": 1}})
                assert patch.status_code in (200, 507)  # a payload is small: it may fit
                assert http.post("/search", json={"query": "hello", "top_k": 5}).status_code == 200
                assert stored(http) == acknowledged
                assert http.get("/documents/count").json()["count"] == len(acknowledged)

                free_disk(disk)
                again = add(http, ["written after space was freed"])
                assert again.status_code == 201, again.text
                acknowledged[again.json()["ids"][0]] = "written after space was freed"

                index = disk / "data" / "index"
                fill_disk(disk)  # the snapshot (Milvus: the flush) at shutdown cannot be written
                manifest = _manifest(index)
                assert manifest is not None or engine == "milvus"
            assert server.stop() == 0
            no_traceback(server)
            if engine == "faiss":
                assert "index snapshot not written" in server.output()
                assert not [f for f in index.iterdir() if ".tmp-" in f.name]
                assert _manifest(index) == manifest
            free_disk(disk)

            server = ServeProcess(tiny_bert, disk / "data", tmp_path / "serve2.log", **env).start()
            with httpx.Client(base_url=server.url, timeout=30) as http:
                assert stored(http) == acknowledged
                hits = http.post("/search", json={"query": "hello", "top_k": 100}).json()
                assert {h["id"] for h in hits["results"]} == set(acknowledged)
            assert server.stop() == 0
        finally:
            server.kill()


def test_index_build_on_a_full_disk_says_why_and_resumes(tiny_bert: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"sentence {i} " + "的一是不了人" * 30 + "\n" for i in range(4096)))
    with small_tmpfs(tmp_path / "disk", "16m") as disk:
        args = ["index", "build", "--input", str(corpus), "--data-dir", str(disk / "data")]
        args += ["--model", str(tiny_bert)]
        (disk / "data").mkdir()
        fill_disk(disk, leave=3 * 2**20)
        first = run_baihua(*args, env=tiny_env())
        assert first.returncode == 1, first.stderr
        last = first.stderr.strip().splitlines()[-1]
        assert last.startswith(f"baihua: error: cannot write to {disk / 'data' / 'index'}: no ")
        assert "no space left" in last and "rerun" in last
        assert "Traceback" not in first.stderr

        free_disk(disk)
        second = run_baihua(*args, env=tiny_env())
        assert second.returncode == 0, second.stderr
        assert "resuming: " in second.stderr
        assert second.stderr.strip().endswith(f"{disk / 'data' / 'index'}: 4096 documents")


def test_read_only_data_dir_at_start_is_one_line_and_exit_1(
    tiny_bert: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    (data / "index").mkdir(parents=True)
    with read_only(data):
        server = ServeProcess(tiny_bert, data, tmp_path / "serve.log").start(ready=False)
        assert server.wait(120) == 1
    lines = server.output().strip().splitlines()
    assert lines[-1].startswith(f"baihua: error: cannot write to {data / 'index'}")
    assert "read-only" in lines[-1]
    assert "Traceback" not in server.output()


def test_a_data_dir_that_turns_read_only_answers_503_for_writes(
    tiny_bert: Path, tmp_path: Path, engine: str
) -> None:
    index = tmp_path / "data" / "index"
    env = ENGINES[engine]
    server = ServeProcess(tiny_bert, tmp_path / "data", tmp_path / "serve.log", **env).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            first = add(http, ["hello world", "bert"])
            ids = first.json()["ids"]
            with read_only(index):
                refused = add(http, ["not stored"])
                assert refused.status_code == 503, refused.text
                assert "read-only" in refused.json()["detail"]
                assert str(index) in refused.json()["detail"]
                assert http.delete(f"/documents/{ids[0]}").status_code == 503
                assert http.post("/search", json={"query": "hello"}).status_code == 200
                assert set(stored(http)) == set(ids)
            again = add(http, ["writable again"])
            assert again.status_code == 201
        assert server.stop() == 0
        no_traceback(server)
        server = ServeProcess(tiny_bert, tmp_path / "data", tmp_path / "serve2.log", **env).start()
        with httpx.Client(base_url=server.url, timeout=30) as http:  # nothing acknowledged lost
            assert set(stored(http)) == set(ids) | set(again.json()["ids"])
    finally:
        server.stop()


def test_a_vanished_data_dir_answers_503_for_writes_and_reads_keep_working(
    tiny_bert: Path, tmp_path: Path
) -> None:
    index = tmp_path / "data" / "index"
    server = ServeProcess(tiny_bert, tmp_path / "data", tmp_path / "serve.log").start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            ids = add(http, ["hello world", "bert"]).json()["ids"]
            shutil.rmtree(index)
            refused = add(http, ["not acknowledged"])
            assert refused.status_code == 503, refused.text
            assert "gone" in refused.json()["detail"] and str(index) in refused.json()["detail"]
            assert http.post("/search", json={"query": "hello"}).status_code == 200
            assert set(stored(http)) == set(ids)
        assert server.stop() == 0
        no_traceback(server)
        assert not index.exists()  # nothing half-written brought back
    finally:
        server.kill()


def test_a_second_server_on_the_same_data_dir_is_refused(tiny_bert: Path, tmp_path: Path) -> None:
    first = ServeProcess(tiny_bert, tmp_path / "data", tmp_path / "first.log").start()
    try:
        second = ServeProcess(tiny_bert, tmp_path / "data", tmp_path / "second.log")
        assert second.start(ready=False).wait(120) == 1
        last = second.output().strip().splitlines()[-1]
        assert last.startswith("baihua: error: store at ") and "already open" in last
        assert first.ready()
    finally:
        first.stop()


def test_index_build_while_a_server_holds_the_data_dir_is_refused(
    tiny_bert: Path, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("hello\nworld\n")
    server = ServeProcess(tiny_bert, tmp_path / "data", tmp_path / "serve.log").start()
    try:
        args = ["index", "build", "--input", str(corpus), "--data-dir", str(tmp_path / "data")]
        built = run_baihua(*args, "--model", str(tiny_bert), env=tiny_env())
        assert built.returncode == 1
        last = built.stderr.strip().splitlines()[-1]
        assert "open in another process" in last and "POST /documents" in last
        assert "stop the server" in last
    finally:
        server.stop()


def _manifest(index: Path) -> dict[str, object] | None:
    path = index / "snapshot.json"
    return json.loads(path.read_text()) if path.exists() else None
