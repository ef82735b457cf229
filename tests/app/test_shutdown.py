"""SIGTERM against a real `baihua serve` process with a deep queue: every client is answered
within the grace period, the index is snapshotted, the exit is 0; a second signal is final."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.app.conftest import wait_until
from tests.app.test_crash import free_port, is_ready

GRACE_S = 2.0
SERVE = """
import sys
from baihua.app.server import serve
from baihua.app.settings import Settings
model, data_dir, port, grace = sys.argv[1:5]
serve(Settings(model=model, pooling="last-avg", device="cpu", data_dir=data_dir, port=int(port),
               max_length=64, num_threads=1, shutdown_grace_s=float(grace),
               max_queued_texts=100_000, request_timeout_s=120))
"""
TEXTS = ["hello world bert " * 20] * 256  # about 0.3 s per request for the tiny BERT


@contextmanager
def serving(tiny_bert: Path, data_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", SERVE, str(tiny_bert), str(data_dir), str(port), str(GRACE_S)]
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[2])
    try:
        wait_until(lambda: is_ready(url) or process.poll() is not None, "never ready", 120)
        assert process.poll() is None, "the server exited at start"
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def queue_depth(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return next(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("baihua_queue_depth ")
    )


def post_all(url: str, pool: ThreadPoolExecutor, n: int) -> list[Future[int | str]]:
    def post(_: int) -> int | str:
        try:
            return httpx.post(f"{url}/embed", json={"texts": TEXTS}, timeout=60).status_code
        except httpx.TransportError as err:
            return type(err).__name__

    return [pool.submit(post, i) for i in range(n)]


def test_sigterm_with_a_deep_queue_answers_everyone_snapshots_and_exits_0(
    tiny_bert: Path, tmp_path: Path
) -> None:
    with serving(tiny_bert, tmp_path) as (process, url), ThreadPoolExecutor(48) as pool:
        added = httpx.post(f"{url}/documents", json={"documents": [{"text": "kept"}]})
        assert added.status_code == 201
        futures = post_all(url, pool, 48)
        wait_until(lambda: queue_depth(url) > 20 * 256, "the queue never filled", 60)
        start = time.monotonic()
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=GRACE_S + 20)
        elapsed = time.monotonic() - start
        outcomes = [future.result(timeout=30) for future in futures]
    assert returncode == 0
    assert elapsed < GRACE_S + 8, elapsed  # 12k texts queued: ~15 s of work if it had waited
    assert set(outcomes) <= {200, 503}, outcomes
    assert 503 in outcomes
    assert (tmp_path / "index" / "snapshot.json").is_file()


def test_a_second_sigterm_exits_at_once(tiny_bert: Path, tmp_path: Path) -> None:
    with serving(tiny_bert, tmp_path) as (process, url), ThreadPoolExecutor(48) as pool:
        post_all(url, pool, 48)
        wait_until(lambda: queue_depth(url) > 20 * 256, "the queue never filled", 60)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        start = time.monotonic()
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=10)
        elapsed = time.monotonic() - start
    assert returncode == 128 + signal.SIGTERM
    assert elapsed < 1.5, elapsed
