"""Length-sorted batches bounded by count and by padded tokens, and their padding."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def length_sorted_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int | None = None
) -> list[list[int]]:
    """Group indices into batches of similar length, longest first.

    Sorting before batching doubles throughput on real length distributions because each batch
    is padded only to its own longest member; `max_tokens` bounds a batch's padded size
    (members × longest), so a few 512-token texts run in small batches of their own while
    short texts still fill `batch_size`. Longest first surfaces out-of-memory errors at the
    start rather than the end of a long job.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for index in order:
        batch = batches[-1] if batches else None
        # the batch's first member is its longest: adding one more pads to that width
        if (
            batch is None
            or len(batch) == batch_size
            or (max_tokens is not None and (len(batch) + 1) * lengths[batch[0]] > max_tokens)
        ):
            batches.append([index])
        else:
            batch.append(index)
    return batches


def split_for_streams(batches: Sequence[list[int]], streams: int) -> list[list[int]]:
    """`batches`, the largest halved until there are `streams` of them (or each holds one text),
    so that streams encoding one call side by side each get work."""
    batches = list(batches)
    while batches and len(batches) < streams:
        largest = max(range(len(batches)), key=lambda i: len(batches[i]))
        batch = batches[largest]
        if len(batch) < 2:
            break
        batches[largest : largest + 1] = [batch[: len(batch) // 2], batch[len(batch) // 2 :]]
    return batches


def pad(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest sequence of this batch only: (input_ids, attention_mask) int64."""
    width = max(len(i) for i in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = seq
        attention_mask[row, : len(seq)] = 1
    return input_ids, attention_mask
