"""Normalize: a sentence-transformers `Normalize` module, L2 normalisation of pooled vectors."""

from __future__ import annotations

import numpy as np


class Normalize:
    """Scale each vector to unit length (a zero vector stays zero), as torch's `normalize`
    does: divided by max(norm, 1e-12)."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(x, axis=-1, keepdims=True)
        return (x / np.maximum(norms, 1e-12)).astype(x.dtype, copy=False)
