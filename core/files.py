"""Atomic, durable file writes: a reader (or the next run after a crash) sees a file's old content
or its new, never a part."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (not atomic on its own: see ``write_atomic``)."""
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def fsync_dir(path: Path) -> None:
    """Make a rename inside the folder ``path`` durable, not just the renamed file's content."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, content: bytes | Callable[[Path], object]) -> None:
    """Write ``content`` to ``path`` through a fsynced temporary sibling renamed into place.

    ``content`` is the bytes, or a function that writes the file at the path it is given (e.g.
    ``lambda p: faiss.write_index(index, str(p))``); the temporary keeps ``path``'s suffix, so
    writers that add one (``np.save``) write where they are told. Its name contains ``.tmp-``,
    for clean-ups of interrupted writes.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex}{path.suffix}")
    try:
        if isinstance(content, bytes):
            write_synced(temporary, content)
        else:
            content(temporary)
            with open(temporary, "rb") as file:
                os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
