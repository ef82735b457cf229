"""Atomic, durable file writes: a reader (or the next run after a crash) sees a file's old content
or its new, never a part."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
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


PARTIAL_SUFFIX = ".partial"  # staging and set-aside folders end so: clean-ups look for it


def write_folder_atomic(path: Path, build: Callable[[Path], object]) -> None:
    """Build a folder with ``build(staging)`` in a sibling and move it to ``path`` once complete.

    A reader, or the next run after a crash, sees the old folder or the new one, never a part.
    An existing ``path`` (empty or not) is replaced: renamed aside, the new one renamed in, the
    old one removed (put back if the second rename fails). Staging and set-aside folders are
    hidden siblings ending in ``PARTIAL_SUFFIX``, removed on any error.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX)
    )
    try:
        build(staging)
        staging.chmod(0o755)  # mkdtemp makes it owner-only; a folder of ours is readable like any
        fsync_dir(staging)
        _move_into_place(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    fsync_dir(path.parent)


def _move_into_place(staging: Path, path: Path) -> None:
    try:
        os.rename(staging, path)  # also replaces an empty folder
        return
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    # A folder cannot be renamed over a non-empty one: set the old one aside, restore on failure.
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}.old{PARTIAL_SUFFIX}")
    os.rename(path, aside)
    try:
        os.rename(staging, path)
    except BaseException:
        os.rename(aside, path)
        raise
    shutil.rmtree(aside, ignore_errors=True)
