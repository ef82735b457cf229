"""SIGTERM against a real `baihua serve` process with a deep queue: every client is answered
within the grace period, the index is snapshotted, the exit is 0; a second signal is final."""

from __future__ import annotations

import http.client
import json
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
import sys, time
from baihua.serving.components import build_pipeline
from baihua.app.server import serve
from baihua.serving.settings import Settings
from baihua.encoder import EmbeddingPipeline

class SlowPipeline(EmbeddingPipeline):  # the real one, slowed so that requests pile up
    def embed(self, texts, **options):
        time.sleep(0.25)
        return super().embed(texts, **options)

model, data_dir, port, grace = sys.argv[1:5]
settings = Settings(model=model, pooling="last-avg", device="cpu", data_dir=data_dir,
                    port=int(port), max_batch_size=4, shutdown_grace_s=float(grace),
                    request_timeout_s=120)
real = build_pipeline(settings)
serve(settings, SlowPipeline(real.encoder, real.transform))
"""
TEXTS = ["hello world", "我在中国", "bert", "a b c"]  # one encoder call (0.25 s) per request
DEEP = 20 * len(TEXTS)  # texts queued: 5 s of work, well over the grace period
JSON_HEADERS = {"Content-Type": "application/json"}


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


def post_all(url: str, pool: ThreadPoolExecutor, n: int) -> list[Future[tuple[int | str, float]]]:
    """`n` concurrent /embed requests; each future gives (status or error, time answered)."""

    def post(_: int) -> tuple[int | str, float]:
        try:
            status: int | str = httpx.post(
                f"{url}/embed", json={"texts": TEXTS}, timeout=60
            ).status_code
        except httpx.TransportError as err:
            status = type(err).__name__
        return status, time.monotonic()

    return [pool.submit(post, i) for i in range(n)]


def test_sigterm_with_a_deep_queue_answers_everyone_snapshots_and_exits_0(
    tiny_bert: Path, tmp_path: Path
) -> None:
    with serving(tiny_bert, tmp_path) as (process, url), ThreadPoolExecutor(48) as pool:
        added = httpx.post(f"{url}/documents", json={"documents": [{"text": "kept"}]})
        assert added.status_code == 201
        futures = post_all(url, pool, 48)
        wait_until(lambda: queue_depth(url) >= DEEP, "the queue never filled", 60)
        late = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=30)
        late.connect()
        start = time.monotonic()
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # connected before the signal, its request sent after
        late.request("POST", "/embed", json.dumps({"texts": TEXTS}), JSON_HEADERS)
        late_status = late.getresponse().status
        returncode = process.wait(timeout=GRACE_S + 30)  # the snapshot, then interpreter exit
        answers = [future.result(timeout=30) for future in futures]
    assert returncode == 0
    assert late_status == 503  # answered, not reset: new encoder work is refused
    outcomes = [status for status, _ in answers]
    # ConnectError: sent after the listener closed; never a connection dropped unanswered
    assert set(outcomes) <= {200, 503, "ConnectError"}, outcomes
    assert 503 in outcomes  # 5 s of queued work did not fit in the grace period
    last_answer = max(answered for _, answered in answers) - start
    assert last_answer < GRACE_S + 3, last_answer
    assert (tmp_path / "index" / "snapshot.json").is_file()


def test_a_second_sigterm_exits_at_once(tiny_bert: Path, tmp_path: Path) -> None:
    with serving(tiny_bert, tmp_path) as (process, url), ThreadPoolExecutor(48) as pool:
        futures = post_all(url, pool, 48)
        wait_until(lambda: queue_depth(url) >= DEEP, "the queue never filled", 60)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        start = time.monotonic()
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=10)
        elapsed = time.monotonic() - start
        for future in futures:
            future.result(timeout=30)  # answered or cut off, none left hanging
    assert returncode == 128 + signal.SIGTERM
    assert elapsed < 1.5, elapsed
