"""The server's memory: RSS of `baihua serve` once ready, after its first request (idle), and
over an `/embed` soak (start, peak, end), per backend.

    .venv/bin/python bench/serve_memory.py --backends openvino-int8,torch --minutes 10

Each backend gets its own server on an empty data directory (the model and its exports come
from the model cache: prepare them first, `baihua models prepare me5-small --backend X`). The
soak sends `--clients` concurrent `/embed` requests of 16 sentences each, drawn from a fixed list
of Chinese sentences with varied lengths; RSS (VmRSS of the server process) is sampled every
second. Memory does not depend on the machine's load, so this runs beside other work.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from serving import free_port, rss_mb, wait_ready

SENTENCES = [
    "今天天气很好，我们去公园散步吧。",
    "这款手机的电池续航怎么样？",
    "请问从北京到上海的高铁需要多长时间",
    "我想了解一下信用卡的年费政策以及免年费的条件，谢谢",
    "机器学习模型在中文文本分类任务上的表现取决于训练数据的质量和数量。",
    "XK-7731 型号的零件还有库存吗",
    "花呗逾期一天会影响征信吗？",
    "他昨天晚上十点才回家，因为公司临时加班开会讨论下个季度的预算。",
]


def post(url: str, body: dict) -> None:
    """POST `body`; a 503 or 429 (the server shedding load on a busy machine) waits for its
    Retry-After and tries again."""
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    while True:
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                response.read()
                return
        except urllib.error.HTTPError as error:
            if error.code not in (429, 503):
                raise
            time.sleep(float(error.headers.get("Retry-After") or 1))


def measure(backend: str, minutes: float, clients: int) -> dict[str, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    baihua = str(Path(sys.executable).with_name("baihua"))
    with tempfile.TemporaryDirectory() as data:
        process = subprocess.Popen(
            [baihua, "serve", "--port", str(port), "--data-dir", data, "--backend", backend],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            ready_s = wait_ready(url, process)
            ready = rss_mb(process.pid)
            post(f"{url}/embed", {"inputs": SENTENCES[:2]})
            time.sleep(3)
            idle = rss_mb(process.pid)
            samples: list[float] = []
            stop = threading.Event()

            def client(seed: int) -> None:
                i = seed
                while not stop.is_set():
                    batch = [SENTENCES[(i + j) % len(SENTENCES)] * (1 + j % 3) for j in range(16)]
                    post(f"{url}/embed", {"inputs": batch})
                    i += 1

            threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
            for thread in threads:
                thread.start()
            end = time.monotonic() + 60 * minutes
            while time.monotonic() < end:
                samples.append(rss_mb(process.pid))
                time.sleep(1)
            stop.set()
            for thread in threads:
                thread.join()
            time.sleep(3)
            after = rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait(60)
    return {
        "ready_s": ready_s,
        "ready_mb": ready,
        "idle_mb": idle,
        "soak_start_mb": samples[0],
        "soak_peak_mb": max(samples),
        "soak_half_mb": samples[len(samples) // 2],
        "soak_end_mb": samples[-1],
        "after_mb": after,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="openvino-int8,torch")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    print(
        "| backend | ready (s) | RSS ready | idle after 1st request | soak start / half-way / "
        "peak / end | "
        "idle after soak |"
    )
    print("|---|---|---|---|---|---|")
    for backend in args.backends.split(","):
        m = measure(backend, args.minutes, args.clients)
        print(
            f"| {backend} | {m['ready_s']:.1f} | {m['ready_mb']:.0f} | {m['idle_mb']:.0f} | "
            f"{m['soak_start_mb']:.0f} / {m['soak_half_mb']:.0f} / {m['soak_peak_mb']:.0f} / "
            f"{m['soak_end_mb']:.0f} | "
            f"{m['after_mb']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
