"""Milvus's native engine (milvus-lite's `milvus` binary) run as a gRPC server on a loopback port,
as a user's Milvus server would be, for the tests that talk to one (``milvus_server`` fixture)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MILVUS_SERVER_URI = "BAIHUA_TEST_MILVUS_URI"  # the running server's address, for subprocesses


@contextmanager
def running_milvus_server(folder: Path) -> Iterator[str]:
    """A server keeping its data in ``folder``, on a free loopback port; yields its address
    (also set in the environment as ``MILVUS_SERVER_URI``). Stopped on the way out, or the
    binary would outlive the tests."""
    from milvus_lite.server import Server

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = Server(str(folder / "milvus.db"), address=f"127.0.0.1:{port}")
    try:
        assert server.init() and server.start(), "the milvus binary did not start"
        _wait_for_port(port, timeout_s=60)
        os.environ[MILVUS_SERVER_URI] = f"http://127.0.0.1:{port}"
        yield os.environ[MILVUS_SERVER_URI]
    finally:
        os.environ.pop(MILVUS_SERVER_URI, None)
        server.stop()


def _wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
