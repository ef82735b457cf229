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

import torch

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
    """What the poolings read from one batch, whichever backend computed it: the last layer,
    the first Transformer layer's output (`hidden_states[1]`, not the embedding layer at index 0:
    a known pitfall of ports of BERT-whitening) and the pooler's output where the model has one."""

    last: torch.Tensor
    first: torch.Tensor | None = None
    pooler: torch.Tensor | None = None


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


def masked_mean(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token states that the attention mask keeps (padding excluded)."""
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def _mean_sqrt_len(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(dim=1) / torch.sqrt(mask.sum(dim=1).clamp(min=1e-9))


def _max(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    keep = attention_mask.unsqueeze(-1).expand_as(states).bool()
    return states.masked_fill(~keep, float("-inf")).max(dim=1).values


def _weighted_mean(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Token i (from 1, counted from the first token, prompt included) weighs i: later tokens
    count more (sentence-transformers' `weightedmean`, for causal models)."""
    positions = torch.arange(1, states.shape[1] + 1, device=states.device, dtype=states.dtype)
    weights = attention_mask.to(states.dtype) * positions.view(1, -1)
    summed = (states * weights.unsqueeze(-1)).sum(dim=1)
    return summed / weights.sum(dim=1, keepdim=True).clamp(min=1e-9)


def _last_token(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The state of the last position the mask keeps (the closing special token for BERT)."""
    width = attention_mask.shape[1]
    kept, from_end = attention_mask.flip(1).max(dim=1)
    last = torch.where(kept == 0, width - 1, width - 1 - from_end)
    masked = states * attention_mask.unsqueeze(-1).to(states.dtype)
    return masked[torch.arange(states.shape[0], device=states.device), last]


def _first_kept(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The first position the mask keeps: [CLS], or the first token after an excluded prompt."""
    first = attention_mask.to(torch.int).argmax(dim=1)
    return states[torch.arange(states.shape[0], device=states.device), first]


def _pool_mode(states: HiddenStates, mask: torch.Tensor, mode: str) -> torch.Tensor:
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
    states: HiddenStates, attention_mask: torch.Tensor, pooling: str, prompt_length: int = 0
) -> torch.Tensor:
    """Pool one right-padded batch; `first-last-avg` averages the first Transformer layer and
    the last. With `:no-prompt`, the first `prompt_length` positions ([CLS] and the prompt's
    tokens) are masked out of the pool, as sentence-transformers does."""
    parsed = parse_pooling(pooling)
    mask = attention_mask
    if not parsed.include_prompt and prompt_length:
        mask = attention_mask.clone()
        mask[:, :prompt_length] = 0
    return torch.cat([_pool_mode(states, mask, mode) for mode in parsed.modes], dim=-1)


def needs_first_layer(poolings: Sequence[str]) -> bool:
    return any("first-last-avg" in parse_pooling(p).modes for p in poolings)
