"""`baihua serve` caps glibc's heap arenas as MALLOC_ARENA_MAX=2 would, counted by glibc itself."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import ctypes, ctypes.util, sys, threading
from baihua.cli.serve import limit_heap_arenas
print(limit_heap_arenas() if sys.argv[1] == "limit" else None)
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
barrier = threading.Barrier(8)
def allocate():
    barrier.wait()
    libc.malloc(1 << 16)
threads = [threading.Thread(target=allocate) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc.malloc_stats()
"""


def arenas(mode: str, **env: str) -> tuple[str, int]:
    """What `limit_heap_arenas` returned, and how many arenas 8 allocating threads left."""
    clean = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    counted = sum(line.startswith("Arena ") for line in done.stderr.splitlines())
    return done.stdout.strip(), counted


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_stats")
def test_threads_share_two_arenas_after_the_limit_and_the_environment_wins() -> None:
    returned, unlimited = arenas("none")
    assert returned == "None" and unlimited > 2  # the main arena and one per thread, up to 8/core
    assert arenas("limit") == ("True", 2)
    assert arenas("limit", MALLOC_ARENA_MAX="4") == ("False", 4)
