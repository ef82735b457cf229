"""Pooling: token states → one sentence vector, several poolings from one forward pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from baihua.core.errors import UsageError

POOLINGS: tuple[str, ...] = ("cls", "pooler", "last-avg", "first-last-avg")


@dataclass
class HiddenStates:
    """What the poolings read from one batch, whichever backend computed it: the last layer,
    the first Transformer layer's output (`hidden_states[1]`, not the embedding layer at index 0:
    a known pitfall of ports of BERT-whitening) and the pooler's output where the model has one."""

    last: torch.Tensor
    first: torch.Tensor | None = None
    pooler: torch.Tensor | None = None


def check_poolings(poolings: Sequence[str]) -> None:
    """Raise a ValueError naming the unknown pooling and the valid ones."""
    for name in poolings:
        if name not in POOLINGS:
            raise UsageError(f"unknown pooling {name!r}; choose one of {', '.join(POOLINGS)}")


def masked_mean(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token states that the attention mask keeps (padding excluded)."""
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def pool(states: HiddenStates, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool one batch; `first-last-avg` averages the first Transformer layer and the last."""
    last = states.last
    if pooling == "cls":
        return last[:, 0]
    if pooling == "pooler":
        if states.pooler is None:
            raise UsageError("this model has no pooler layer; use cls, last-avg or first-last-avg")
        return states.pooler
    if pooling == "last-avg":
        return masked_mean(last, attention_mask)
    if pooling == "first-last-avg":
        assert states.first is not None, "first-last-avg needs the first layer's states"
        return masked_mean((states.first + last) / 2, attention_mask)
    check_poolings([pooling])
    raise AssertionError("unreachable")
