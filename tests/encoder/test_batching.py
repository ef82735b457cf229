"""Batches bounded by count and by padded tokens: every text once, long texts kept apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from baihua.encoder import Encoder
from baihua.encoder.batching import length_sorted_batches, split_for_streams


@given(
    st.lists(st.integers(1, 512), max_size=200),
    st.integers(1, 64),
    st.integers(512, 8192),
)
def test_batches_respect_count_and_token_bounds(
    lengths: list[int], batch_size: int, max_tokens: int
) -> None:
    batches = length_sorted_batches(lengths, batch_size, max_tokens)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= batch_size
        assert len(batch) * max(lengths[i] for i in batch) <= max_tokens
    widths = [lengths[batch[0]] for batch in batches]
    assert widths == sorted(widths, reverse=True)


def test_a_long_text_does_not_pad_the_short_ones() -> None:
    batches = length_sorted_batches([512] + [8] * 40, batch_size=32, max_tokens=2048)
    assert batches[0][0] == 0
    assert [len(b) for b in batches] == [4, 32, 5]  # 4 x 512 tokens fit, not 32 x 512


def test_token_bounded_batches_give_the_same_vectors(tiny_bert: Path) -> None:
    texts = ["hello world bert " * 20, "a", "b c", "我在中国", "hello"] * 4
    bounded = Encoder(str(tiny_bert), device="cpu", max_length=64, max_batch_tokens=64)
    unbounded = Encoder(str(tiny_bert), device="cpu", max_length=64, max_batch_tokens=100_000)
    np.testing.assert_allclose(bounded.encode(texts), unbounded.encode(texts), atol=1e-5)


def test_batches_split_so_that_every_stream_gets_work() -> None:
    assert split_for_streams([[0, 1, 2, 3, 4]], 2) == [[0, 1], [2, 3, 4]]
    assert split_for_streams([[0, 1, 2, 3], [4]], 3) == [[0, 1], [2, 3], [4]]
    assert split_for_streams([[0], [1]], 4) == [[0], [1]]  # one text each: nothing to split
    assert split_for_streams([], 2) == []
    many = [[0, 1], [2, 3], [4]]
    assert split_for_streams(many, 2) == many
