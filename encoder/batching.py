"""Length-sorted batches: padding only to the longest sentence of each batch."""

from __future__ import annotations

from collections.abc import Sequence


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Group indices into batches of similar length, longest first.

    Sorting before batching doubles throughput on real length distributions (DESIGN.md) because
    each batch is padded only to its own longest member; longest first surfaces out-of-memory
    errors at the start rather than the end of a long job.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
