"""Pooling: token states → one sentence vector, several poolings from one forward pass."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from baihua.core.errors import UsageError

POOLINGS: tuple[str, ...] = ("cls", "pooler", "last-avg", "first-last-avg")


def check_poolings(poolings: Sequence[str]) -> None:
    """Raise a ValueError naming the unknown pooling and the valid ones."""
    for name in poolings:
        if name not in POOLINGS:
            raise UsageError(f"unknown pooling {name!r}; choose one of {', '.join(POOLINGS)}")


def masked_mean(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token states that the attention mask keeps (padding excluded)."""
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def pool(
    hidden_states: Sequence[torch.Tensor],
    attention_mask: torch.Tensor,
    pooling: str,
    pooler_output: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pool one batch.

    `hidden_states` is the model's tuple: index 0 is the embedding layer, index 1 the first
    Transformer layer's output, index -1 the last. `first-last-avg` averages 1 and -1 (not 0:
    the embedding output is a known pitfall of ports of BERT-whitening).
    """
    last = hidden_states[-1]
    if pooling == "cls":
        return last[:, 0]
    if pooling == "pooler":
        if pooler_output is None:
            raise UsageError("this model has no pooler layer; use cls, last-avg or first-last-avg")
        return pooler_output
    if pooling == "last-avg":
        return masked_mean(last, attention_mask)
    if pooling == "first-last-avg":
        return masked_mean((hidden_states[1] + last) / 2, attention_mask)
    check_poolings([pooling])
    raise AssertionError("unreachable")
