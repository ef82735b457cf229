"""Locks of a store: a reader/writer lock (many readers at once, or one writer alone) for threads,
and a store directory's lock for processes.

FAISS CPU indexes allow concurrent searches but not search + add, so searches take the read side
and every mutation the write side. Waiting writers block new readers, so a steady stream of searches
cannot starve an add. Not reentrant: a holder must not acquire either side again.
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from baihua.index.errors import StoreLockedError


class RWLock:
    """Writer-preferring lock, used as ``with lock.read():`` and ``with lock.write():``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        """Hold the shared side: waits while a writer holds or waits for the lock."""
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        """Hold the exclusive side: waits until no reader or writer holds the lock."""
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


def lock_directory(path: Path) -> IO[bytes]:
    """Take the store directory's lock (held while the returned file stays open), or raise
    StoreLockedError naming the directory."""
    handle = open(path / "lock", "ab")  # noqa: SIM115 - held open for the store's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StoreLockedError(path) from None
    return handle
