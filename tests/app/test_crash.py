"""Acknowledged writes survive a server killed without shutdown (no index snapshot saved)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx

from baihua.app.main import create_app
from tests.app.conftest import base_settings, running_server, wait_until

SERVE = """
import sys, uvicorn
from baihua.app.main import create_app
from baihua.app.settings import Settings
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
