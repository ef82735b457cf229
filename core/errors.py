"""The errors a user can cause, told apart from bugs.

A `BaihuaError` means the input, a flag, a file or a combination of them is wrong and the message
says what to fix; the CLI prints it as one line. Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

from pathlib import Path


class BaihuaError(Exception):
    """Base of every error a user can cause and fix."""


class UsageError(BaihuaError, ValueError):
    """A flag or parameter value, or a combination of them, that cannot work."""


class StorageError(BaihuaError, RuntimeError):
    """The data directory ``path`` cannot take a write; ``reason`` says why in one word and the
    message in words, with what to do. Nothing of the refused write was acknowledged."""

    def __init__(self, path: Path, reason: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason


class StorageFullError(StorageError):
    """The filesystem of ``path`` has no space (ENOSPC) or quota (EDQUOT) left: ``reason`` is
    "full" or "quota". Writes succeed again once space is freed."""


class StorageUnavailableError(StorageError):
    """``path`` is read-only ("read-only"), not writable by this user ("permission"), gone
    ("missing"), replaced by another directory ("replaced") or failing ("io")."""
