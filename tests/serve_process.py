"""`baihua serve` as a real subprocess on a free port, serving the tiny BERT of tests/conftest.py,
its output in a log file; and filesystems to break under it (a small tmpfs, a read-only bind
mount), which need root."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BAIHUA = Path(sys.executable).with_name("baihua")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tiny_env(**extra: str) -> dict[str, str]:
    """The environment of a `baihua` command on the tiny BERT (the space of base_settings)."""
    env = dict(os.environ)
    env.update(
        BAIHUA_POOLING="last-avg",
        BAIHUA_MAX_LENGTH="16",
        BAIHUA_DEVICE="cpu",
        BAIHUA_BACKEND="torch",
        BAIHUA_SHUTDOWN_GRACE_S="2",
        OMP_NUM_THREADS="1",
    )
    env.update(extra)
    return env


def run_baihua(
    *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BAIHUA), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


class ServeProcess:
    """One `baihua serve --data-dir DATA --model MODEL` process; `start` waits until /readyz."""

    def __init__(self, model: Path, data_dir: Path, log: Path, **env: str) -> None:
        self.model, self.data_dir, self.log = model, data_dir, log
        self.env = tiny_env(**env)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, ready: bool = True, timeout: float = 120) -> ServeProcess:
        command = [str(BAIHUA), "serve", "--data-dir", str(self.data_dir)]
        command += ["--model", str(self.model), "--port", str(self.port)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        if ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"baihua serve exited {self.process.returncode}:\n{self.output()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"baihua serve never ready:\n{self.output()}")
            time.sleep(0.05)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown, no snapshot."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        self.wait()

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM: drain, snapshot, exit; the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 60) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)


@contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` ("4m") mounted at ``where`` for the block."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` seen read-only through a bind mount over itself (root ignores mode bits)."""
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill_disk(folder: Path, leave: int = 0) -> Path:
    """Write a ballast file in ``folder`` until the filesystem is full, then give back
    ``leave`` bytes of it; returns it."""
    ballast = folder / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (1 << 20, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)
    if leave:
        os.truncate(ballast, max(0, ballast.stat().st_size - leave))
    return ballast


def free_disk(folder: Path) -> None:
    (folder / "ballast").unlink(missing_ok=True)


def can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None
