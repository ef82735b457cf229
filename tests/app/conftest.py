"""A real uvicorn server on a free port, in a background thread, serving the tiny BERT."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn

from baihua.app.main import create_app
from baihua.encoder import EmbeddingPipeline
from baihua.serving.settings import Settings
from tests.conftest import MAX_LENGTH


def base_settings(tiny_bert: Path, **overrides: Any) -> Settings:
    # the tests of dense search predate hybrid search (the default): they ask for dense
    defaults: dict[str, Any] = dict(
        model=str(tiny_bert),
        pooling="last-avg",
        max_length=MAX_LENGTH,
        device="cpu",
        search_mode="dense",
    )
    return Settings(**{**defaults, **overrides})


@contextmanager
def running_server(app: Any, *, ready: bool = True) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 in a thread; yields its base URL, stops it on exit."""
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets that name it,
    # and without it Nagle's algorithm adds ~40 ms to every keep-alive response
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, "the server did not start")
        if ready:
            wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 200, "never ready")
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        assert not thread.is_alive(), "the server did not stop"


def wait_until(condition: Callable[[], bool], message: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(message)
        time.sleep(0.01)


StartServer = Callable[..., str]


@pytest.fixture
def start_server(
    tiny_bert: Path, pipeline: EmbeddingPipeline, tmp_path: Path
) -> Iterator[StartServer]:
    """`start_server(pipeline=..., ready=True, **settings)` → base URL; each server gets its own
    data_dir under this test's tmp_path unless one is given; `ready=False` returns before the
    model and index are loaded."""
    with ExitStack() as stack:
        count = itertools.count()

        def start(
            pipeline: EmbeddingPipeline | None = pipeline, ready: bool = True, **overrides: Any
        ) -> str:
            overrides.setdefault("data_dir", tmp_path / f"server-{next(count)}")
            settings = base_settings(tiny_bert, **overrides)
            app = create_app(settings, pipeline)
            return stack.enter_context(running_server(app, ready=ready))

        yield start


@pytest.fixture
def server(start_server: StartServer) -> str:
    return start_server()


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as client:
        yield client


def embed_in_process(pipeline: EmbeddingPipeline, texts: list[str], **options: Any) -> np.ndarray:
    return pipeline.embed(texts, **options).vectors
