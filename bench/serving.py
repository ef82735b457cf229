"""Start the real `baihua serve` in its own process for the HTTP benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    port: int, data_dir: Path, *flags: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`baihua serve --port PORT --data-dir DATA_DIR FLAGS…`, access log silenced; `env` adds
    to this process's environment (settings such as BAIHUA_STREAMS)."""
    command = [sys.executable, "-c", "from baihua.cli.main import main; main()", "serve"]
    command += ["--port", str(port), "--data-dir", str(data_dir), *flags]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def wait_ready(url: str, server: subprocess.Popen[bytes], timeout: float = 600) -> float:
    """Seconds until the server at `url` answers /readyz 200."""
    start = time.monotonic()
    while time.monotonic() < start + timeout:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode}")
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the server at {url} was not ready after {timeout:.0f} s")


def rss_mb(pid: int) -> float:
    """A process's resident memory (VmRSS) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid} (has it exited?)")
