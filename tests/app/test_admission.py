"""Admission at the edge against the real server: refused before the body is read, in the
route's error shape, and a deadline that counts from arrival, so late work is never encoded."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import orjson

from baihua.encoder import EmbeddingPipeline
from tests.app.conftest import StartServer, wait_until
from tests.serving.test_batcher import SlowPipeline


def raw_request(url: str, path: str, body: bytes) -> socket.socket:
    """A connection that has sent the headers of a JSON POST but none of its body."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode())
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(rest) < int(headers["content-length"]):
        rest += sock.recv(65536)
    return int(lines[0].split()[1]), headers, rest


def in_flight(url: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("baihua_requests_in_flight "):
            return float(line.split()[-1])
    raise AssertionError("no baihua_requests_in_flight in /metrics")


def hold_one_request(url: str, slow: SlowPipeline) -> threading.Thread:
    """One /embed in progress (its encoder call takes `slow.delay`), until the thread ends."""
    thread = threading.Thread(
        target=httpx.post, args=(f"{url}/embed",), kwargs={"json": {"texts": ["甲"]}, "timeout": 30}
    )
    thread.start()
    wait_until(lambda: in_flight(url) == 1, "the first request never started")
    return thread


def test_a_request_over_the_in_flight_limit_is_refused_before_its_body_arrives(
    start_server: StartServer, pipeline: EmbeddingPipeline
) -> None:
    slow = SlowPipeline(pipeline, 1.0)
    url = start_server(pipeline=slow, max_in_flight=1)
    holder = hold_one_request(url, slow)
    sock = raw_request(url, "/embed", b'{"texts": ["never sent"]}')  # the body never follows
    with sock:
        status, headers, body = read_response(sock)
    holder.join()
    assert status == 503
    assert 1 <= int(headers["retry-after"]) <= 60
    assert "in progress" in orjson.loads(body)["detail"]
    assert "never sent" not in slow.encoded


def test_openai_and_tei_clients_are_refused_with_429_in_their_error_shape(
    start_server: StartServer, pipeline: EmbeddingPipeline
) -> None:
    slow = SlowPipeline(pipeline, 1.0)
    url = start_server(pipeline=slow, max_in_flight=1)
    holder = hold_one_request(url, slow)
    openai = httpx.post(f"{url}/v1/embeddings", json={"input": ["乙"], "model": "m"})
    tei = httpx.post(f"{url}/", json={"inputs": ["乙"]})
    search = httpx.post(f"{url}/search", json={"query": "乙"})
    holder.join()
    assert openai.status_code == 429 and openai.json()["error"]["type"] == "rate_limit_error"
    assert tei.status_code == 429 and tei.json()["error_type"] == "Overloaded"
    assert search.status_code == 503 and "in progress" in search.json()["detail"]
    assert all("retry-after" in r.headers for r in (openai, tei, search))
    assert slow.encoded == ["甲"]


def test_cheap_routes_are_never_refused_while_the_encoder_is_busy(
    start_server: StartServer, pipeline: EmbeddingPipeline
) -> None:
    slow = SlowPipeline(pipeline, 1.0)
    url = start_server(pipeline=slow, max_in_flight=1)
    holder = hold_one_request(url, slow)
    responses = [
        httpx.get(f"{url}/readyz"),
        httpx.get(f"{url}/documents/count"),
        httpx.post(f"{url}/tokenize", json={"inputs": "丙"}),
    ]
    holder.join()
    assert [r.status_code for r in responses] == [200, 200, 200]


def test_the_deadline_counts_from_arrival_so_a_late_body_is_never_encoded(
    start_server: StartServer, pipeline: EmbeddingPipeline
) -> None:
    slow = SlowPipeline(pipeline, 0.0)
    url = start_server(pipeline=slow, request_timeout_s=0.5)
    body = b'{"texts": ["slow body"]}'
    with raw_request(url, "/embed", body) as sock:
        time.sleep(1.0)  # past the deadline before the body is even sent
        sock.sendall(body)
        status, _, answer = read_response(sock)
    assert status == 503
    assert "deadline" in orjson.loads(answer)["detail"]
    assert slow.encoded == []
    assert httpx.post(f"{url}/embed", json={"texts": ["on time"]}).status_code == 200


def test_refusals_are_counted_under_their_route(
    start_server: StartServer, pipeline: EmbeddingPipeline
) -> None:
    slow = SlowPipeline(pipeline, 1.0)
    url = start_server(pipeline=slow, max_in_flight=1)
    holder = hold_one_request(url, slow)
    assert httpx.post(f"{url}/embed", json={"texts": ["丁"]}).status_code == 503
    holder.join()
    metrics = httpx.get(f"{url}/metrics").text
    assert 'baihua_http_requests_total{method="POST",route="/embed",status="503"} 1.0' in metrics
    assert 'baihua_http_requests_total{method="POST",route="/embed",status="200"} 1.0' in metrics
