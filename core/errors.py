"""The errors a user can cause, told apart from bugs.

A `BaihuaError` means the input, a flag, a file or a combination of them is wrong and the message
says what to fix; the CLI prints it as one line. Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations


class BaihuaError(Exception):
    """Base of every error a user can cause and fix."""


class UsageError(BaihuaError, ValueError):
    """A flag or parameter value, or a combination of them, that cannot work."""
