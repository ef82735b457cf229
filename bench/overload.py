"""Overload: 4x the sustainable load on `POST /embed`, `POST /v1/embeddings` and `POST /search`
for 60 s each, with client timeouts (each request: 8 short Chinese sentences to embed, or 8
queries with top_k 10 against 2000 stored documents). Reports useful throughput (texts answered
200 within the client timeout) as a ratio to the unloaded peak, p50/p99 latency of successes,
status counts, queue depth, server RSS over time, and where the server's time went (mean
seconds per stage: arrival to the encoder queue, the queue, an encoder call, and the app's
whole answer to a 200; what the client saw beyond that waited outside the app), and the cores
the server and the client kept busy in each phase (they share the machine).

    nice -n 10 .venv/bin/python bench/overload.py                       # this checkout
    nice -n 10 .venv/bin/python bench/overload.py --server-python /tmp/before/.venv/bin/python

The server is the real `baihua serve` in its own process (`--server-python` picks the
interpreter, hence the checkout, that runs it; the client side always runs from here). First the
unloaded peak: `--clients` closed-loop clients for `--peak-s` seconds. Then an open loop at
`--factor` x the peak request rate for `--duration-s` seconds, each request with a
`--client-timeout-s` timeout; then the unloaded peak again, since one 10-20 s peak varies by
10 % or more between phases: the useful throughput is set against the peak before
(`useful_vs_peak`) and against the mean of both (`useful_vs_peaks`). `--env KEY=VALUE` passes
settings to the server (e.g. `BAIHUA_REQUEST_TIMEOUT_S=2`); ones an older checkout does not
know are ignored by it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from embed_throughput import batches

from serving import free_port, rss_mb, wait_ready


@dataclass
class Phase:
    route: str
    offered_rps: float
    duration_s: float
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies_ok: list[float] = field(default_factory=list)
    texts_ok: int = 0
    sent_rps: float = 0.0  # what the client managed to send (it shares the machine)
    queue_depth: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    client_lag_s: list[float] = field(default_factory=list)  # the client's own event loop
    cores_used: dict[str, float] = field(default_factory=dict)  # while requests were sent

    def summary(self, peak_texts_per_s: float | None) -> dict[str, Any]:
        useful = self.texts_ok / self.duration_s
        lat = sorted(self.latencies_ok)
        return {
            "route": self.route,
            "offered_requests_per_s": round(self.offered_rps, 1),
            "sent_requests_per_s": round(self.sent_rps, 1),
            "useful_texts_per_s": round(useful, 1),
            "useful_vs_peak": None if not peak_texts_per_s else round(useful / peak_texts_per_s, 3),
            "p50_ok_s": round(lat[len(lat) // 2], 3) if lat else None,
            "p99_ok_s": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 3) if lat else None,
            "statuses": dict(self.statuses),
            "queue_depth_max": max(self.queue_depth, default=0.0),
            "client_loop_lag_mean_max_s": [
                round(sum(self.client_lag_s) / max(1, len(self.client_lag_s)), 3),
                round(max(self.client_lag_s, default=0.0), 3),
            ],
            "rss_mb_start_max_end": [
                round(self.rss_mb[0]) if self.rss_mb else None,
                round(max(self.rss_mb)) if self.rss_mb else None,
                round(self.rss_mb[-1]) if self.rss_mb else None,
            ],
        }


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) the process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cores_used(server_pid: int, since: tuple[float, float, float]) -> dict[str, float]:
    """Cores the server and this client kept busy since `since` = `cpu_marks(server_pid)`."""
    server, client, wall = (
        now - then for now, then in zip(cpu_marks(server_pid), since, strict=True)
    )
    return {"server": round(server / wall, 2), "client": round(client / wall, 2)}


def cpu_marks(server_pid: int) -> tuple[float, float, float]:
    return cpu_s(server_pid), time.process_time(), time.monotonic()


async def queue_depth(http: httpx.AsyncClient) -> float:
    try:
        text = (await http.get("/metrics", timeout=5)).text
    except httpx.HTTPError:
        return float("nan")
    for line in text.splitlines():
        if line.startswith("baihua_queue_depth "):
            return float(line.split()[-1])
    return float("nan")


def body_for(route: str, texts: list[str]) -> dict[str, Any]:
    if route == "/embed":
        return {"texts": texts}
    if route == "/v1/embeddings":
        return {"input": texts, "model": "m"}
    return {"queries": texts, "top_k": 10}


async def server_stages(http: httpx.AsyncClient, route: str) -> dict[str, tuple[float, float]]:
    """(sum of seconds, count) of the server's own timings: each request stage, the encoder
    calls, and the route's 200s from the app's first to its last byte (older checkouts lack
    some)."""
    try:
        text = (await http.get("/metrics", timeout=10)).text
    except httpx.HTTPError:
        return {}
    series = {  # name, labels → stage
        ("baihua_request_stage_seconds", '{stage="parse"}'): "parse",
        ("baihua_request_stage_seconds", '{stage="queue"}'): "queue",
        ("baihua_encoder_seconds", ""): "encode",
        ("baihua_event_loop_lag_seconds", ""): "loop_lag",
        (
            "baihua_http_request_duration_seconds",
            f'{{method="POST",route="{route}",status="200"}}',
        ): "app",
    }
    for line in text.splitlines():  # texts shed by the batcher, by reason
        if line.startswith('baihua_shed_texts_total{reason="'):
            reason = line.split('"')[1]
            series[("baihua_shed_texts_total", f'{{reason="{reason}"}}')] = f"shed_{reason}"
    found: dict[str, list[float]] = {}
    for (name, labels), stage in series.items():
        parts = ("", "") if name.endswith("_total") else ("_sum", "_count")
        for i, part in enumerate(parts):
            prefix = name + part + labels + " "
            for line in text.splitlines():
                if line.startswith(prefix):
                    found.setdefault(stage, [0.0, 0.0])[i] = float(line.split()[-1])
    buckets = f'method="POST",route="{route}",status="200"}}'
    for line in text.splitlines():  # the app's own latency of 200s, as cumulative buckets
        if line.startswith("baihua_http_request_duration_seconds_bucket{") and buckets in line:
            le = line.split('le="')[1].split('"')[0]
            found[f"le_{le}"] = [float(line.split()[-1])] * 2
    return {stage: (total, count) for stage, (total, count) in found.items()}


def server_p99(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> str:
    """The bucket bound under which the app answered 99 % of the phase's 200s ("+Inf": above
    the largest bucket)."""
    counts = [
        (float(name[3:]), name[3:], after[name][0] - before.get(name, (0.0, 0.0))[0])
        for name in after
        if name.startswith("le_")
    ]
    counts.sort()
    total = counts[-1][2] if counts else 0.0
    return next((le for _, le, n in counts if n >= 0.99 * total), "n/a")


def stage_means(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """Mean seconds per stage over a phase, from the counters before and after it."""
    means = {}
    for name, (total, count) in after.items():
        total0, count0 = before.get(name, (0.0, 0.0))
        if name.startswith("le_"):
            continue
        if name.startswith("shed_"):  # a counter: texts shed during the phase
            means[name] = total - total0
        elif count > count0:
            means[name] = round((total - total0) / (count - count0), 4)
    return means


async def closed_loop_peak(
    url: str, route: str, work: list[list[str]], clients: int, seconds: float
) -> float:
    """Texts per second answered by `clients` back-to-back clients (the unloaded peak)."""
    done = 0
    stop = time.monotonic() + seconds

    async def client(i: int) -> None:
        nonlocal done
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            k = i
            while time.monotonic() < stop:
                texts = work[k % len(work)]
                response = await http.post(route, json=body_for(route, texts))
                if response.status_code != 200:  # shed (503): back off, count only answers
                    await asyncio.sleep(0.1)
                    continue
                done += len(texts)
                k += clients

    start = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return done / (time.monotonic() - start)


async def open_loop(
    url: str,
    route: str,
    work: list[list[str]],
    rps: float,
    seconds: float,
    timeout: float,
    pid: int,
) -> Phase:
    phase = Phase(route, rps, seconds)
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=2000)
    start = time.monotonic()

    async def one(http: httpx.AsyncClient, texts: list[str]) -> None:
        sent = time.monotonic()
        try:
            response = await http.post(route, json=body_for(route, texts))
        except httpx.TimeoutException:
            phase.statuses["client_timeout"] += 1
            return
        except httpx.TransportError as err:
            phase.statuses[type(err).__name__] += 1
            return
        phase.statuses[str(response.status_code)] += 1
        if response.status_code == 200 and time.monotonic() - start <= seconds + timeout:
            phase.latencies_ok.append(time.monotonic() - sent)
            phase.texts_ok += len(texts)

    async def sample(http: httpx.AsyncClient) -> None:
        while time.monotonic() - start < seconds + timeout:
            phase.queue_depth.append(await queue_depth(http))
            phase.rss_mb.append(rss_mb(pid))
            slept = time.monotonic()
            await asyncio.sleep(1.0)
            phase.client_lag_s.append(time.monotonic() - slept - 1.0)

    async with (
        httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as http,
        httpx.AsyncClient(base_url=url, timeout=10) as probe,
    ):
        sampler = asyncio.create_task(sample(probe))
        marks = cpu_marks(pid)
        tasks = []
        n = int(rps * seconds)
        for i in range(n):
            delay = start + i / rps - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(http, work[i % len(work)])))
        phase.sent_rps = n / (time.monotonic() - start)
        phase.cores_used = cores_used(pid, marks)
        await asyncio.gather(*tasks)
        await sampler
    return phase


async def drain(url: str) -> None:
    """Wait (up to 2 minutes) for a backlog to drain (an old server keeps encoding it)."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as probe:
        for _ in range(120):
            if (await queue_depth(probe)) == 0:
                break
            await asyncio.sleep(1)


def start(
    python: str, port: int, data_dir: Path, model: str, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    command = [python, "-c", "from baihua.cli.main import main; main()", "serve"]
    command += ["--port", str(port), "--data-dir", str(data_dir), "--model", model]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env}
    )


def stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=40)
    except subprocess.TimeoutExpired:
        server.kill()  # the old server could hang on SIGTERM with a deep queue
        server.wait(timeout=30)


def load_documents(url: str, n: int) -> None:
    texts = [t for batch in batches(n // 32 + 1) for t in batch][:n]
    with httpx.Client(base_url=url, timeout=600) as http:
        for i in range(0, n, 64):
            docs = [{"text": f"{t} {j}"} for j, t in enumerate(texts[i : i + 64], start=i)]
            http.post("/documents", json={"documents": docs}).raise_for_status()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    env = dict(item.split("=", 1) for item in args.env)
    work = batches(256, args.texts_per_request)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {"settings": vars(args)}
    with tempfile.TemporaryDirectory() as data_dir:
        server = start(args.server_python, port, Path(data_dir), args.model, env)
        try:
            wait_ready(url, server)
            load_documents(url, args.documents)
            for route in args.routes.split(","):
                await closed_loop_peak(url, route, work, args.clients, 3)  # warm-up
                marks = cpu_marks(server.pid)
                peak = await closed_loop_peak(url, route, work, args.clients, args.peak_s)
                peak_cores = cores_used(server.pid, marks)
                rps = args.factor * peak / args.texts_per_request
                print(
                    f"{route}: unloaded peak {peak:.1f} texts/s; offering {rps:.1f} requests/s",
                    flush=True,
                )
                async with httpx.AsyncClient(base_url=url) as probe:
                    before = await server_stages(probe, route)
                    phase = await open_loop(
                        url, route, work, rps, args.duration_s, args.client_timeout_s, server.pid
                    )
                    after = await server_stages(probe, route)
                await drain(url)
                peak_after = await closed_loop_peak(url, route, work, args.clients, args.peak_s)
                summary = phase.summary(peak)
                summary["peak_after_texts_per_s"] = round(peak_after, 1)
                summary["useful_vs_peaks"] = round(
                    summary["useful_texts_per_s"] / ((peak + peak_after) / 2), 3
                )
                summary["server_mean_s"] = stage_means(before, after)
                summary["server_app_p99_under_s"] = server_p99(before, after)
                summary["peak_texts_per_s"] = round(peak, 1)
                summary["cores_used"] = {"peak": peak_cores, "overload": phase.cores_used}
                summary["queue_depth_over_time"] = phase.queue_depth
                summary["rss_mb_over_time"] = [round(x) for x in phase.rss_mb]
                results[route] = summary
                print(
                    json.dumps({k: v for k, v in summary.items() if not k.endswith("over_time")}),
                    flush=True,
                )
                await drain(url)
        finally:
            stop(server)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="me5-small")
    parser.add_argument(
        "--server-python", default=sys.executable, help="interpreter of the checkout to serve"
    )
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    parser.add_argument("--routes", default="/embed,/v1/embeddings,/search")
    parser.add_argument("--texts-per-request", type=int, default=8)
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients for the peak")
    parser.add_argument("--peak-s", type=float, default=15)
    parser.add_argument("--factor", type=float, default=4.0)
    parser.add_argument("--duration-s", type=float, default=60)
    parser.add_argument("--client-timeout-s", type=float, default=5)
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--out", type=Path, help="write the full results (time series too) as JSON")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
