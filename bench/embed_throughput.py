"""Throughput of `POST /embed` under 8 concurrent clients for each backend, as ratios: to
`pipeline.embed` called in process on the same batches one after another, from as many threads
as clients at once, and in one call on all of them (what the HTTP layer and micro-batching cost or
gain against the encoder's best in-process rate, its batches side by side on every stream), and
of each backend's /embed to the first one's (auto against forced fp32); and, on the first backend
in the same rounds, TEI-shaped (`{"inputs": [...]}`, answered with a bare list)
and OpenAI-shaped requests (`/v1/embeddings`, float and base64) as ratios to native `/embed`.

    .venv/bin/python bench/embed_throughput.py                 # me5-small, auto vs torch fp32
    .venv/bin/python bench/embed_throughput.py --model path/to/folder --requests 32

The servers are the real one, `baihua serve --backend B`, each started in its own process on a
free port with a temporary data directory; each request carries 32 short Chinese sentences. Both
sides use the settings' defaults otherwise (max length, batch size, whitening), and the backends
take turns over `--rounds` rounds because the machine is noisy; medians are printed last.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from baihua.encoder import EmbeddingPipeline
from baihua.serving.components import build_pipeline
from baihua.serving.settings import load_settings
from serving import free_port, start_server, wait_ready

SUBJECTS = ["我", "他们", "老师", "这家公司", "小明", "我的朋友", "银行", "网友"]
VERBS = ["喜欢", "不想", "正在", "昨天开始", "怎么", "可以", "打算", "已经"]
OBJECTS = ["吃火锅", "办信用卡", "学习中文", "还款", "看电影", "去北京出差", "修改密码", "买手机"]


def batches(n_requests: int, batch_size: int = 32) -> list[list[str]]:
    """Distinct short sentences (5-12 characters), cycled into `n_requests` batches."""
    sentences = [s + v + o for s, v, o in itertools.product(SUBJECTS, VERBS, OBJECTS)]
    cycle = itertools.cycle(sentences)
    return [[next(cycle) for _ in range(batch_size)] for _ in range(n_requests)]


def in_process_seconds(pipeline: EmbeddingPipeline, work: list[list[str]]) -> float:
    start = time.perf_counter()
    for texts in work:
        pipeline.embed(texts)
    return time.perf_counter() - start


def threaded_seconds(pipeline: EmbeddingPipeline, work: list[list[str]], clients: int) -> float:
    """`clients` threads calling `pipeline.embed` on the batches at once, as the server's clients
    do: what the encoder gives concurrent callers without HTTP and without merging batches."""
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(pipeline.embed, work))
    return time.perf_counter() - start


def one_call_seconds(pipeline: EmbeddingPipeline, work: list[list[str]]) -> float:
    texts = [text for batch in work for text in batch]
    start = time.perf_counter()
    pipeline.embed(texts)
    return time.perf_counter() - start


# request shape → (route, body of a batch of texts)
SHAPES: dict[str, tuple[str, Callable[[list[str]], dict[str, Any]]]] = {
    "native": ("/embed", lambda texts: {"texts": texts}),
    "tei": ("/embed", lambda texts: {"inputs": texts}),
    "openai": ("/v1/embeddings", lambda texts: {"input": texts, "model": "m"}),
    "openai-base64": (
        "/v1/embeddings",
        lambda texts: {"input": texts, "model": "m", "encoding_format": "base64"},
    ),
}


def encoder_counters(url: str) -> tuple[float, float, float]:
    """The server's encoder totals so far: seconds in encoder calls, calls, texts encoded."""
    wanted = {
        "baihua_encoder_seconds_sum": 0,
        "baihua_encoder_seconds_count": 1,
        "baihua_encoder_batch_size_sum": 2,
    }
    totals = [0.0, 0.0, 0.0]
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            totals[wanted[name]] = float(value)
    return totals[0], totals[1], totals[2]


def where_time_went(
    before: tuple[float, float, float], after: tuple[float, float, float], wall_s: float
) -> str:
    """The encoder's share of the wall time, its texts per call and its own rate while busy."""
    seconds, calls, texts = (b - a for a, b in zip(before, after, strict=True))
    return (
        f"encoder busy {seconds / wall_s:.0%} of the time, {texts / max(calls, 1):.0f} texts "
        f"per call, {texts / max(seconds, 1e-9):.0f} sentences/s while encoding"
    )


def http_seconds(url: str, work: list[list[str]], clients: int, shape: str = "native") -> float:
    """Wall time for `clients` threads, each with its own keep-alive connection, to post all."""
    shares = [work[i::clients] for i in range(clients)]
    route, body = SHAPES[shape]

    def post_all(share: list[list[str]]) -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            for texts in share:
                http.post(route, json=body(texts)).raise_for_status()

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(post_all, shares))
    return time.perf_counter() - start


FORCED_DTYPE = {"torch": "float32"}  # "torch" here means forced fp32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="me5-small", help="preset, local folder or hub id")
    parser.add_argument("--requests", type=int, default=64, help="requests of 32 sentences")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backends", default="torch,auto", help="first one is the reference")
    args = parser.parse_args()

    work = batches(args.requests)
    n = sum(len(texts) for texts in work)
    names = args.backends.split(",")
    flags = {b: ["--backend", b] for b in names}
    for b, dtype in FORCED_DTYPE.items():
        flags.get(b, []).extend(["--dtype", dtype])
    pipelines = {
        b: build_pipeline(load_settings(model=args.model, backend=b, dtype=FORCED_DTYPE.get(b)))
        for b in names
    }
    ports = {b: free_port() for b in names}
    urls = {b: f"http://127.0.0.1:{port}" for b, port in ports.items()}
    with ExitStack() as stack:
        servers = {}
        for b in names:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            servers[b] = start_server(ports[b], data_dir, "--model", args.model, *flags[b])
            stack.callback(stop, servers[b])
        for b in names:
            wait_ready(urls[b], servers[b])
            pipelines[b].embed(work[0])  # warm-up: first calls allocate
            http_seconds(urls[b], work[: args.clients], args.clients)
        local: dict[str, list[float]] = {b: [] for b in names}
        one_call: dict[str, list[float]] = {b: [] for b in names}
        threaded: dict[str, list[float]] = {b: [] for b in names}
        http: dict[str, list[float]] = {b: [] for b in names}
        shapes: dict[str, list[float]] = {shape: [] for shape in SHAPES if shape != "native"}
        for round in range(args.rounds):
            for b in names:
                local[b].append(n / in_process_seconds(pipelines[b], work))
                one_call[b].append(n / one_call_seconds(pipelines[b], work))
                threaded[b].append(n / threaded_seconds(pipelines[b], work, args.clients))
                before = encoder_counters(urls[b])
                wall = http_seconds(urls[b], work, args.clients)
                http[b].append(n / wall)
                spent = where_time_went(before, encoder_counters(urls[b]), wall)
                encoder = pipelines[b].encoder
                print(f"round {round + 1}, {b} ({encoder.backend} {encoder.dtype}): in process "
                      f"{local[b][-1]:7.1f} sentences/s, from {args.clients} threads "
                      f"{threaded[b][-1]:7.1f}, in one call {one_call[b][-1]:7.1f}, "
                      f"/embed with {args.clients} clients {http[b][-1]:7.1f} sentences/s "
                      f"({http[b][-1] / local[b][-1]:.2f} of in process, "
                      f"{http[b][-1] / threaded[b][-1]:.2f} of threads, "
                      f"{http[b][-1] / one_call[b][-1]:.2f} of one call); "
                      f"server: {spent}")  # fmt: skip
            for shape, ratios in shapes.items():  # the first backend's server, this round
                speed = n / http_seconds(urls[names[0]], work, args.clients, shape)
                ratios.append(speed / http[names[0]][-1])
                print(f"  {names[0]} {shape:>13}: {speed:7.1f} sentences/s, "
                      f"{ratios[-1]:.2f} of native /embed")  # fmt: skip
    reference = statistics.median(http[names[0]])
    for b in names:
        speed = statistics.median(http[b])
        print(f"{b}: /embed {speed:7.1f} sentences/s, {speed / reference:.2f}x {names[0]}'s "
              f"/embed, {speed / statistics.median(local[b]):.2f} of in-process, "
              f"{speed / statistics.median(threaded[b]):.2f} of in-process threads, "
              f"{speed / statistics.median(one_call[b]):.2f} of one in-process call")  # fmt: skip
    for shape, ratios in shapes.items():
        print(f"{shape} throughput / native /embed throughput ({names[0]}): "
              f"{statistics.median(ratios):.2f}")  # fmt: skip


def stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    server.wait(timeout=60)


if __name__ == "__main__":
    main()
