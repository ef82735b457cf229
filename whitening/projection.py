"""The Johnson–Lindenstrauss baseline: a seeded Gaussian random projection, as an estimator beside
:class:`whitening.Whitening`.

A fitted rotation (``rot-k``) should beat a free random map to the same k dimensions; this is the
map to beat. It looks at no data: ``fit`` only reads the number of features.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from baihua.whitening.artifact import TransformMetadata, register_transform
from baihua.whitening.base import TransformBase, require_integer
from baihua.whitening.moments import BLOCK_ROWS


def gaussian_matrix(n_features: int, n_components: int, seed: int) -> np.ndarray:
    """R of shape (n_features, n_components), entries N(0, 1/k): E‖xR‖² = ‖x‖².

    Drawn as ``sklearn.random_projection.GaussianRandomProjection(k, random_state=seed)`` draws
    its (k, d) matrix (numpy's legacy ``RandomState``, whose stream numpy keeps stable), then
    transposed, so both give the same projection.
    """
    rng = np.random.RandomState(seed)
    return rng.normal(0.0, 1.0 / np.sqrt(n_components), (n_components, n_features)).T


class RandomProjection(TransformBase):
    """Maps x to ``x · R`` with R a seeded (d, k) matrix of N(0, 1/k) entries.

    Distances and norms are kept up to a factor 1 ± ε with high probability once k is of order
    log(n) / ε² (Johnson–Lindenstrauss); cosines of nearby vectors are therefore roughly kept, but
    nothing is learned from the vectors. No mean is removed.

    Parameters
    ----------
    n_components : int
        Dimensions k of the output (1 ≤ k; larger than n_features is allowed but pointless).
    seed : int
        Seed of the matrix; the same seed and shape give the same matrix on every machine.

    Attributes
    ----------
    components_ : np.ndarray of shape (n_features, n_components)
        R.
    n_components_ : int
        k.
    n_features_in_ : int
        Dimension of the input vectors.
    n_samples_seen_ : int
        Number of vectors ``fit`` was given (they are not used beyond their shape).
    """

    method = "jl"

    def __init__(self, n_components: int, seed: int = 0) -> None:
        self.n_components = n_components
        self.seed = seed

    def _fit(self, X: np.ndarray) -> RandomProjection:
        return self.fit_features(X.shape[1], n_samples=X.shape[0])

    def fit_features(self, n_features: int, *, n_samples: int = 0) -> RandomProjection:
        """Draw R for ``n_features``-dimensional vectors without seeing any (``baihua fit``)."""
        self.check_params(n_features)
        self._set_fitted(gaussian_matrix(n_features, self.n_components, self.seed), n_samples)
        return self

    def check_params(self, n_features: int | None = None) -> None:
        """Raise UsageError for a k or seed that cannot work (also before any data is seen)."""
        require_integer("n_components", self.n_components, 1)
        require_integer("seed", self.seed, 0)
        if n_features is not None:
            require_integer("n_features", n_features, 1)

    def transform(self, X: Any) -> np.ndarray:
        """``X @ R`` as float32 (n_samples, n_components_), computed in float64."""
        X = self._check_input(X, "transform")
        out = np.empty((X.shape[0], self.n_components_), dtype=np.float32)
        for start in range(0, X.shape[0], BLOCK_ROWS):
            out[start : start + BLOCK_ROWS] = (
                X[start : start + BLOCK_ROWS].astype(np.float64) @ self.components_
            )
        return out

    def _artifact_contents(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"components": self.components_}, {"method": "jl", "seed": self.seed}

    @classmethod
    def _expected_shapes(cls, metadata: TransformMetadata) -> dict[str, tuple[int, ...]]:
        return {"components": (metadata.n_features_in, metadata.n_components)}

    @classmethod
    def _from_artifact(
        cls, tensors: dict[str, np.ndarray], metadata: TransformMetadata, **options: Any
    ) -> RandomProjection:
        assert metadata.seed is not None  # the metadata validator requires it for jl
        projection = cls(metadata.n_components, seed=metadata.seed, **options)
        projection._set_fitted(tensors["components"], metadata.n_samples)
        return projection

    def _set_fitted(self, components: np.ndarray, n_samples: int) -> None:
        self.components_ = np.array(components, dtype=np.float64, order="C")
        self.n_features_in_, self.n_components_ = (int(n) for n in self.components_.shape)
        self.n_samples_seen_ = n_samples


register_transform("jl", RandomProjection.from_pretrained)
