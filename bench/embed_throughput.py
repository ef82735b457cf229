"""Throughput of `POST /embed` under 8 concurrent clients, as a ratio to `pipeline.embed` called
in process on the same batches: what the HTTP layer and micro-batching cost (or gain); and, in the
same run, TEI-shaped (`{"inputs": [...]}`, answered with a bare list) and OpenAI-shaped requests
(`/v1/embeddings`, float and base64) as ratios to our native `/embed`.

    .venv/bin/python bench/embed_throughput.py                 # me5-small, 64 requests
    .venv/bin/python bench/embed_throughput.py --model path/to/folder --requests 32

The server is the real one, `baihua serve`, started in its own process on a free port with a
temporary data directory; each request carries 32 short Chinese sentences. Both sides use the
settings' defaults (max length, batch size, dtype, whitening), and alternate over `--rounds`
rounds because the machine is noisy; the median ratio is printed last.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from serving import free_port, start_server, wait_ready

from baihua.app.components import build_pipeline
from baihua.app.settings import load_settings
from baihua.encoder import EmbeddingPipeline

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="me5-small", help="preset, local folder or hub id")
    parser.add_argument("--requests", type=int, default=64, help="requests of 32 sentences")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    work = batches(args.requests)
    n = sum(len(texts) for texts in work)
    pipeline = build_pipeline(load_settings(model=args.model))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data_dir:
        server = start_server(port, Path(data_dir), "--model", args.model)
        try:
            wait_ready(url, server)
            pipeline.embed(work[0])  # warm-up: first calls allocate
            http_seconds(url, work[: args.clients], args.clients)
            ratios: list[float] = []
            shape_ratios: dict[str, list[float]] = {
                shape: [] for shape in SHAPES if shape != "native"
            }
            for round in range(args.rounds):
                t_local = in_process_seconds(pipeline, work)
                t_http = http_seconds(url, work, args.clients)
                ratios.append(t_local / t_http)
                print(f"round {round + 1}: in process {n / t_local:7.1f} sentences/s, "
                      f"/embed with {args.clients} clients {n / t_http:7.1f} sentences/s, "
                      f"ratio {ratios[-1]:.2f}")  # fmt: skip
                for shape in shape_ratios:
                    t_shape = http_seconds(url, work, args.clients, shape)
                    shape_ratios[shape].append(t_http / t_shape)
                    print(f"  {shape:>13}: {n / t_shape:7.1f} sentences/s, "
                          f"{shape_ratios[shape][-1]:.2f} of native /embed")  # fmt: skip
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(f"/embed throughput / in-process throughput: {statistics.median(ratios):.2f}")
    for shape, values in shape_ratios.items():
        print(f"{shape} throughput / native /embed throughput: {statistics.median(values):.2f}")


if __name__ == "__main__":
    main()
