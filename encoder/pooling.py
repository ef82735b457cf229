"""Pooling: token states → one sentence vector, several poolings from one forward pass.

A pooling name is one mode (`cls`, `last-avg`, …) or several joined by `+` (their vectors are
concatenated in that order, as sentence-transformers' Pooling does with several modes), with
`:no-prompt` appended when the prompt's tokens are left out of the pool (its `include_prompt:
false`). The modes after `first-last-avg` are sentence-transformers' own, computed as its
`Pooling` computes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from baihua.core.errors import UsageError

MODES: tuple[str, ...] = (
    "cls",
    "pooler",
    "last-avg",
    "first-last-avg",
    "max",
    "mean-sqrt-len",
    "weighted-mean",
    "last-token",
)
POOLINGS: tuple[str, ...] = MODES
NO_PROMPT = ":no-prompt"
# sentence-transformers' pooling_mode → ours; `pooler` and `first-last-avg` have no equivalent
ST_MODES = {
    "cls": "cls",
    "mean": "last-avg",
    "max": "max",
    "mean_sqrt_len_tokens": "mean-sqrt-len",
    "weightedmean": "weighted-mean",
    "lasttoken": "last-token",
}


@dataclass
class HiddenStates:
    """What the poolings read from one batch, whichever backend computed it (float32 arrays on
    the CPU): the last layer, the first Transformer layer's output (`hidden_states[1]`, not the
    embedding layer at index 0: a known pitfall of ports of BERT-whitening) and the pooler's
    output where the model has one."""

    last: np.ndarray
    first: np.ndarray | None = None
    pooler: np.ndarray | None = None


@dataclass(frozen=True)
class Pooling:
    """A parsed pooling name: its modes in order, and whether the prompt's tokens are pooled."""

    modes: tuple[str, ...]
    include_prompt: bool = True

    @property
    def name(self) -> str:
        return "+".join(self.modes) + ("" if self.include_prompt else NO_PROMPT)

    def dim(self, hidden: int) -> int:
        return hidden * len(self.modes)


def parse_pooling(name: str) -> Pooling:
    """`cls`, `cls+last-avg`, `last-avg:no-prompt`, …; a UsageError names an unknown mode."""
    include_prompt = not name.endswith(NO_PROMPT)
    body = name if include_prompt else name[: -len(NO_PROMPT)]
    modes = tuple(body.split("+"))
    for mode in modes:
        if mode not in MODES:
            raise UsageError(
                f"unknown pooling {name!r}; choose one of {', '.join(MODES)}, several joined "
                f"by '+', optionally followed by {NO_PROMPT!r}"
            )
    if len(set(modes)) != len(modes):
        raise UsageError(f"pooling {name!r} names a mode twice")
    return Pooling(modes, include_prompt)


def check_poolings(poolings: Sequence[str]) -> None:
    """Raise a UsageError naming the first pooling that does not parse."""
    for name in poolings:
        parse_pooling(name)


def masked_mean(states: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Average the token states that the attention mask keeps (padding excluded)."""
    mask = attention_mask[..., None].astype(states.dtype)
    return (states * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)


def _mean_sqrt_len(states: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    mask = attention_mask[..., None].astype(states.dtype)
    return (states * mask).sum(axis=1) / np.sqrt(np.maximum(mask.sum(axis=1), 1e-9))


def _max(states: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    keep = attention_mask[..., None].astype(bool)
    return np.where(keep, states, -np.inf).max(axis=1).astype(states.dtype)


def _weighted_mean(states: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Token i (from 1, counted from the first token, prompt included) weighs i: later tokens
    count more (sentence-transformers' `weightedmean`, for causal models)."""
    positions = np.arange(1, states.shape[1] + 1, dtype=states.dtype)
    weights = attention_mask.astype(states.dtype) * positions[None, :]
    summed = (states * weights[..., None]).sum(axis=1)
    return summed / np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)


def _last_token(states: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """The state of the last position the mask keeps (the closing special token for BERT)."""
    width = attention_mask.shape[1]
    flipped = attention_mask[:, ::-1]
    kept, from_end = flipped.max(axis=1), flipped.argmax(axis=1)
    last = np.where(kept == 0, width - 1, width - 1 - from_end)
    masked = states * attention_mask[..., None].astype(states.dtype)
    return masked[np.arange(states.shape[0]), last]


def _first_kept(states: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """The first position the mask keeps: [CLS], or the first token after an excluded prompt."""
    first = attention_mask.argmax(axis=1)
    return states[np.arange(states.shape[0]), first]


def _pool_mode(states: HiddenStates, mask: np.ndarray, mode: str) -> np.ndarray:
    last = states.last
    if mode == "cls":
        return _first_kept(last, mask)
    if mode == "pooler":
        if states.pooler is None:
            raise UsageError("this model has no pooler layer; use cls, last-avg or first-last-avg")
        return states.pooler
    if mode == "last-avg":
        return masked_mean(last, mask)
    if mode == "first-last-avg":
        assert states.first is not None, "first-last-avg needs the first layer's states"
        return masked_mean((states.first + last) / 2, mask)
    if mode == "max":
        return _max(last, mask)
    if mode == "mean-sqrt-len":
        return _mean_sqrt_len(last, mask)
    if mode == "weighted-mean":
        return _weighted_mean(last, mask)
    assert mode == "last-token", mode
    return _last_token(last, mask)


def pool(
    states: HiddenStates, attention_mask: np.ndarray, pooling: str, prompt_length: int = 0
) -> np.ndarray:
    """Pool one right-padded batch into float32 vectors; `first-last-avg` averages the first
    Transformer layer and the last. With `:no-prompt`, the first `prompt_length` positions ([CLS]
    and the prompt's tokens) are masked out of the pool, as sentence-transformers does."""
    parsed = parse_pooling(pooling)
    mask = attention_mask
    if not parsed.include_prompt and prompt_length:
        mask = attention_mask.copy()
        mask[:, :prompt_length] = 0
    parts = [_pool_mode(states, mask, mode) for mode in parsed.modes]
    return np.concatenate(parts, axis=-1).astype(np.float32, copy=False)


def needs_first_layer(poolings: Sequence[str]) -> bool:
    return any("first-last-avg" in parse_pooling(p).modes for p in poolings)
