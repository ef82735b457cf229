"""Latency of a lone `POST /embed` on an idle server, for server settings side by side: one
client, one request at a time, of 1, 8 and 32 short Chinese sentences and of 8 passages of 512
tokens; p50 and p90 per size, and the server's RSS after them.

    .venv/bin/python bench/embed_latency.py                                   # the defaults
    .venv/bin/python bench/embed_latency.py --setting "" \\
        --setting "BAIHUA_STREAMS=1 BAIHUA_MAX_WAIT_MS=5"                     # against the old ones

Each `--setting` (space-separated KEY=VALUE, "" for the defaults) gets its own `baihua serve`
process on an empty data directory; the settings take turns over `--rounds` rounds, and the
medians of the rounds' p50s are printed last. Throughput under concurrent clients is
bench/embed_throughput.py's; this is what one user waits for when nobody else is asking.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from embed_throughput import batches

from serving import free_port, rss_mb, start_server, wait_ready

PASSAGE = "长文本检索需要把整段内容编码成一个向量，"  # 20 characters; repeated to 512 tokens


def lone_latencies(url: str, sizes: list[int], requests: int) -> dict[str, list[float]]:
    """Seconds per request, sequential, for each size of short sentences and for long texts."""
    work = batches(requests)
    out: dict[str, list[float]] = {}
    with httpx.Client(base_url=url, timeout=120) as http:
        for texts in work[:5]:
            http.post("/embed", json={"texts": texts}).raise_for_status()  # warm-up
        cases = [(f"{size} sentences", [texts[:size] for texts in work]) for size in sizes]
        cases.append(("8 passages of 512 tokens", [[PASSAGE * 30] * 8] * max(3, requests // 10)))
        for name, bodies in cases:
            seconds = out.setdefault(name, [])
            for texts in bodies:
                start = time.perf_counter()
                http.post("/embed", json={"texts": texts}).raise_for_status()
                seconds.append(time.perf_counter() - start)
    return out


def stop(server: subprocess.Popen[bytes]) -> None:
    """Stop a server and wait for its drain, so that it snapshots before its folder goes."""
    server.terminate()
    server.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="me5-small", help="preset, local folder or hub id")
    parser.add_argument("--setting", action="append", help='"KEY=VALUE …"; "" for the defaults')
    parser.add_argument("--requests", type=int, default=100, help="per size of short texts")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    settings = args.setting or [""]
    labels = [setting or "defaults" for setting in settings]
    p50s: dict[str, dict[str, list[float]]] = {label: {} for label in labels}
    with ExitStack() as stack:
        servers, urls = {}, {}
        for label, setting in zip(labels, settings, strict=True):
            env = dict(item.split("=", 1) for item in setting.split())
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            port = free_port()
            servers[label] = start_server(port, data_dir, "--model", args.model, env=env)
            stack.callback(stop, servers[label])  # before its data directory goes
            urls[label] = f"http://127.0.0.1:{port}"
        for label in labels:
            wait_ready(urls[label], servers[label])
        for round in range(args.rounds):
            for label in labels:
                measured = lone_latencies(urls[label], [1, 8, 32], args.requests)
                row = []
                for name, seconds in measured.items():
                    p50 = statistics.median(seconds) * 1000
                    p90 = statistics.quantiles(seconds, n=10)[-1] * 1000
                    p50s[label].setdefault(name, []).append(p50)
                    row.append(f"{name} {p50:.1f} / {p90:.1f}")
                rss = rss_mb(servers[label].pid)
                print(f"round {round + 1}, {label}: p50 / p90 ms: {'; '.join(row)}; "
                      f"RSS {rss:.0f} MB")  # fmt: skip
    for label in labels:
        medians = "; ".join(f"{name} {statistics.median(v):.1f}" for name, v in p50s[label].items())
        print(f"{label}: p50 ms (median of rounds): {medians}")


if __name__ == "__main__":
    main()
