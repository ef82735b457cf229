"""What a write meets on disk, in words: a full disk, a read-only or vanished data directory.

The store raises what its engine raises (``OSError`` with ENOSPC, sqlite3's "database or disk is
full", ...); ``storage_errors`` turns those into ``StorageFullError`` and
``StorageUnavailableError``, which name the directory and say what to do, so the HTTP layer can
answer 507 or 503 and the CLI print one line. ``DataDirectory`` checks before and after each
write that the directory the store opened is still there and writable: a store whose files were
deleted keeps writing into unlinked files, and a write that went there must not be acknowledged.
It also refuses a write when less than ``RESERVE`` bytes are free: the embedded Milvus engine
(milvus-lite 2.5.1) acknowledges inserts it could not persist on a full disk ("database or disk
is full" goes to its log only; the rows are served from memory and gone after a restart), and
its deletes retry for minutes there; so no write is tried on a disk that is (nearly) full.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from baihua.core.errors import StorageError, StorageFullError, StorageUnavailableError

# sqlite3 primary result codes (the low byte of an extended code)
_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 8, 10, 13, 14

_FULL = {errno.ENOSPC: "full", errno.EDQUOT: "quota"}
RESERVE = 1 << 20  # bytes a write needs free beyond its own size (journals, segments)


# what the refused operation was, and what it leaves: for the message
Doing = Literal["write", "open", "build"]
_AFTER = {
    "write": "nothing of this write was stored; searches and reads keep working",
    "open": "the index was not opened",
    "build": "the documents indexed so far are kept",
}
_RETRY = {"write": "retry (no restart needed)", "open": "retry", "build": "rerun to resume"}


def full_error(path: Path, reason: str = "full", doing: Doing = "write") -> StorageFullError:
    cause = "no space left on the device" if reason == "full" else "the disk quota is used up"
    return StorageFullError(
        path,
        reason,
        f"cannot write to {path}: {cause}; {_AFTER[doing]}. Free space there and {_RETRY[doing]}.",
    )


def unavailable_error(path: Path, reason: str, doing: Doing = "write") -> StorageUnavailableError:
    what = {
        "read-only": "the data directory is on a read-only filesystem",
        "permission": "this user may not write to the data directory",
        "missing": "the data directory is gone (deleted or unmounted)",
        "replaced": "the data directory was replaced by another one while the index was open",
        "io": "the filesystem reports I/O errors",
    }[reason]
    if doing == "open":
        todo = "make it writable, or give another data directory (--data-dir)"
    elif reason in ("read-only", "permission"):
        todo = f"make it writable again and {_RETRY[doing]}"
    else:
        todo = "restore it and restart the server"
    return StorageUnavailableError(
        path, reason, f"cannot write to {path}: {what}; {_AFTER[doing]}. To fix: {todo}."
    )


def classify(error: BaseException, path: Path, doing: Doing = "write") -> StorageError | None:
    """The storage error ``error`` means for the data directory ``path``; None when it is not
    one (a bug, or a file the user named)."""
    if isinstance(error, StorageError):
        return error
    if isinstance(error, OSError):
        if error.errno in _FULL:
            return full_error(path, _FULL[error.errno], doing)
        if error.errno == errno.EROFS:
            return unavailable_error(path, "read-only", doing)
        if error.errno in (errno.EACCES, errno.EPERM):
            return unavailable_error(path, "permission", doing)
        if error.errno in (errno.ENOENT, errno.ENOTDIR) and not path.is_dir():
            return unavailable_error(path, "missing", doing)
        if error.errno == errno.EIO:
            return unavailable_error(path, "io", doing)
        return None
    if isinstance(error, sqlite3.Error):
        code = (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF
        if code == _SQLITE_FULL:
            return full_error(path, doing=doing)
        if code in (_SQLITE_READONLY, _SQLITE_CANTOPEN, _SQLITE_IOERR):
            reason = "io" if code == _SQLITE_IOERR else "read-only"
            return directory_problem(path, doing) or unavailable_error(path, reason, doing)
    return None


@contextmanager
def storage_errors(path: Path | None, doing: Doing = "write") -> Iterator[None]:
    """Raise what goes wrong on disk inside the block as a ``StorageError`` naming ``path``
    (the data directory; None: the store keeps no files here, nothing is mapped)."""
    try:
        yield
    except (OSError, sqlite3.Error) as error:
        mapped = None if path is None else classify(error, path, doing)
        if mapped is None:
            raise
        raise mapped from error


def directory_problem(path: Path, doing: Doing = "write") -> StorageUnavailableError | None:
    """Why ``path`` cannot take writes now (gone, read-only, not writable), or None."""
    try:
        stat = os.statvfs(path)
    except FileNotFoundError:
        return unavailable_error(path, "missing", doing)
    except OSError:
        return unavailable_error(path, "io", doing)
    if stat.f_flag & os.ST_RDONLY:
        return unavailable_error(path, "read-only", doing)
    if not os.access(path, os.W_OK):
        return unavailable_error(path, "permission", doing)
    return None


class DataDirectory:
    """The directory a store writes in, as it was when the store opened it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._identity = _identity(path)

    def check(self) -> None:
        """Raise ``StorageUnavailableError`` when the directory is gone, another one, read-only
        or not writable: what a write must not be acknowledged in; ``StorageFullError`` when
        less than ``RESERVE`` bytes are free there."""
        problem = directory_problem(self.path)
        if problem is not None:
            raise problem
        if _identity(self.path) != self._identity:
            raise unavailable_error(self.path, "replaced")
        stat = os.statvfs(self.path)
        if stat.f_bavail * stat.f_frsize < RESERVE:
            raise full_error(self.path)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino
