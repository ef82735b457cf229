"""Streaming sufficient statistics (n, Σx, Σxxᵀ) for the mean and covariance of vectors.

Moments are summed, so chunks can be accumulated on different workers and merged exactly
(map: encode a chunk → moments; reduce: merge). Everything is kept in float64: full-dimension
whitening divides by the smallest eigenvalues, which float32 sums would not resolve.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy

from baihua.core.files import write_atomic
from baihua.whitening.artifact import ArtifactError

# Rows cast to float64 at a time: bounds the temporary copy (8192 × 768 × 8 B ≈ 50 MB).
BLOCK_ROWS = 8192


def check_array(x: Any, *, name: str = "X") -> np.ndarray:
    """Validate a batch of vectors the way scikit-learn's ``check_array`` does.

    Parameters
    ----------
    x : array-like of shape (n_samples, n_features)
        Real numbers, at least one sample and one feature, all finite.
    name : str
        How error messages refer to ``x``.

    Returns
    -------
    np.ndarray
        ``x`` as an array, without a copy when it already is a real-valued ndarray.
    """
    if hasattr(x, "toarray"):  # scipy.sparse: densifying silently could exhaust memory
        raise TypeError(f"{name}: sparse input is not supported; pass {name}.toarray()")
    array = np.asarray(x)
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_features), got shape "
            f"{array.shape}; Reshape your data: a single vector with x.reshape(1, -1)"
        )
    if np.iscomplexobj(array):
        raise ValueError(f"{name}: Complex data not supported, got dtype {array.dtype}")
    if array.dtype == object:
        array = array.astype(np.float64)  # raises, naming the value, unless all are numbers
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} is empty: 0 sample(s) (shape={array.shape})")
    if array.shape[1] == 0:
        raise ValueError(
            f"{name} is empty: 0 feature(s) (shape={array.shape}) while a minimum of 1 is required."
        )
    # A float64 sum is finite iff every entry is, barring overflow, which the slow check settles.
    if not np.isfinite(array.sum(dtype=np.float64)) and not np.isfinite(array).all():
        first_bad_row = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
        raise ValueError(f"{name} contains NaN or infinity (first at row {first_bad_row})")
    return array


@dataclass(eq=False)
class Moments:
    """Count, sum and sum of outer products of the vectors seen so far, in float64.

    Attributes
    ----------
    n : int
        Number of vectors.
    sum : np.ndarray of shape (d,)
        Σ x.
    sum_outer : np.ndarray of shape (d, d)
        Σ x xᵀ.
    """

    n: int
    sum: np.ndarray
    sum_outer: np.ndarray

    def __post_init__(self) -> None:
        self.sum = np.asarray(self.sum, dtype=np.float64)
        self.sum_outer = np.asarray(self.sum_outer, dtype=np.float64)
        d = self.sum.shape[0] if self.sum.ndim == 1 else -1
        if d < 1 or self.sum_outer.shape != (d, d):
            raise ValueError(
                f"Moments need sum of shape (d,) and sum_outer of shape (d, d), got "
                f"{self.sum.shape} and {self.sum_outer.shape}"
            )
        if self.n < 0:
            raise ValueError(f"Moments need n >= 0, got {self.n}")

    @classmethod
    def empty(cls, dim: int) -> Moments:
        """Moments of no vectors of dimension ``dim``."""
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        return cls(0, np.zeros(dim), np.zeros((dim, dim)))

    @property
    def dim(self) -> int:
        """Dimension d of the vectors."""
        return int(self.sum.shape[0])

    def update(self, x: np.ndarray) -> None:
        """Add the rows of ``x`` (shape (m, d), any real dtype) to the statistics."""
        x = check_array(x, name="x")
        if x.shape[1] != self.dim:
            raise ValueError(f"x has {x.shape[1]} features, but these moments have {self.dim}")
        for start in range(0, x.shape[0], BLOCK_ROWS):
            block = x[start : start + BLOCK_ROWS].astype(np.float64)
            self.sum += block.sum(axis=0)
            self.sum_outer += block.T @ block
        self.n += x.shape[0]

    def merge(self, other: Moments) -> Moments:
        """Moments of the union of both sets of vectors (a new object; sums are exact)."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge moments of dimension {self.dim} and {other.dim}")
        return Moments(self.n + other.n, self.sum + other.sum, self.sum_outer + other.sum_outer)

    @property
    def mean(self) -> np.ndarray:
        """Mean vector, shape (d,)."""
        if self.n == 0:
            raise ValueError("the mean of no vectors is undefined; update the moments first")
        return self.sum / self.n

    @property
    def covariance(self) -> np.ndarray:
        """Population covariance Σ = (Σxxᵀ − n μμᵀ) / n, shape (d, d).

        Divides by n, as ``np.cov(x.T, bias=True)``: this is the convention under which the
        whitened training vectors have exactly identity covariance.
        """
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 vectors, got n_samples={self.n}")
        covariance = (self.sum_outer - np.outer(self.sum, self.sum) / self.n) / self.n
        return (covariance + covariance.T) / 2

    def save(self, path: Path, **extra: int | str) -> None:
        """Write the moments to ``path`` atomically (safetensors, float64).

        Parameters
        ----------
        path : Path
            File to write; an existing file is replaced only once the new one is on disk.
        **extra : int or str
            Bookkeeping of the job that owns the moments, e.g. ``lines_done`` to resume it.
        """
        for key, value in extra.items():
            if not isinstance(value, int | str):
                raise TypeError(f"extra field {key!r} must be int or str, got {type(value)}")
        data = safetensors.numpy.save(
            {"sum": self.sum, "sum_outer": self.sum_outer},
            metadata={"n": str(self.n), "extra": json.dumps(extra)},
        )
        write_atomic(Path(path), data)

    @classmethod
    def load(cls, path: Path) -> tuple[Moments, dict[str, int | str]]:
        """Read moments written by :meth:`save`; returns them and the ``extra`` fields."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"moments file {path} does not exist")
        try:
            with safetensors.safe_open(path, framework="np") as file:
                header = file.metadata()
                moments = cls(
                    int(header["n"]), file.get_tensor("sum"), file.get_tensor("sum_outer")
                )
            extra = json.loads(header["extra"])
        except (safetensors.SafetensorError, KeyError, TypeError, ValueError) as error:
            raise ArtifactError(
                f"{path} is not a readable moments file ({error}); delete it to start over"
            ) from error
        return moments, extra
