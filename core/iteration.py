"""Cutting a stream into lists, the one way every job and engine does it."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter) until `items` runs out."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
