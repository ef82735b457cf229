"""Normalize: a sentence-transformers `Normalize` module, L2 normalisation of pooled vectors."""

from __future__ import annotations

import torch


class Normalize:
    """Scale each vector to unit length (a zero vector stays zero)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x, p=2, dim=-1)
