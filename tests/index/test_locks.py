"""The reader/writer lock."""

from __future__ import annotations

import threading

from baihua.index.locks import RWLock


def test_rwlock_lets_readers_share_and_writers_wait() -> None:
    lock = RWLock()
    readers_inside = threading.Barrier(3, timeout=5)  # two readers and this thread
    release_readers = threading.Event()
    writer_in = threading.Event()

    def reader() -> None:
        with lock.read():
            readers_inside.wait()
            release_readers.wait(5)

    def writer() -> None:
        with lock.write():
            writer_in.set()

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    readers_inside.wait()  # times out unless both readers hold the lock at once
    threads.append(threading.Thread(target=writer))
    threads[-1].start()

    assert not writer_in.wait(0.2)
    release_readers.set()
    assert writer_in.wait(5)
    for thread in threads:
        thread.join(5)
