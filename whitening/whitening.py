"""BERT-whitening (Su et al. 2021) with Su's β/γ generalisation, as a scikit-learn estimator."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from baihua.core.errors import UsageError
from baihua.whitening.artifact import TransformMetadata, register_transform
from baihua.whitening.base import TransformBase, require_finite, require_integer
from baihua.whitening.moments import BLOCK_ROWS, Moments, check_array


def _moments_of(X: np.ndarray) -> Moments:
    moments = Moments.empty(X.shape[1])
    moments.update(X)
    return moments


def _rank(eigenvalues: np.ndarray, floor: float, n_samples: int) -> int:
    """Directions with variance: eigenvalues (descending) above ``floor`` × the largest; n
    centred vectors span at most n − 1."""
    return min(int(np.sum(eigenvalues > floor * eigenvalues[0])), n_samples - 1)


class Whitening(TransformBase):
    """Maps x to ``(x − β·μ) · U[:, D:D+k] · (Λ[D:D+k] + ε·λ̄)^(−γ/2)``, with Σ = U Λ Uᵀ the
    covariance, λ̄ its mean eigenvalue, D = ``drop_top`` and ε = ``shrinkage`` (both 0 by default:
    ``(x − β·μ) · U[:, :k] · Λ[:k]^(−γ/2)``).

    β = γ = 1 is BERT-whitening: the fitted vectors get zero mean and identity covariance, which
    undoes the anisotropy of raw BERT vectors. β = γ = 0 only rotates and truncates, which keeps
    the geometry supervised encoders learned while cutting dimensions (kexue.fm/archives/9079).

    The covariance divides by n (``np.cov(X.T, bias=True)``), so the whitened fitting vectors
    have exactly identity covariance. The reference code (bojone/BERT-whitening) and
    ``sklearn.decomposition.PCA(whiten=True)`` divide by n − 1, so their outputs are this one's
    times sqrt((n − 1) / n); cosines, hence STS and retrieval scores, are the same.

    Parameters
    ----------
    n_components : int or None
        Dimensions k to keep, those of largest variance; None keeps every direction with
        variance (``rank_`` of them). k must not exceed ``rank_``: whitening a direction without
        variance only scales noise up. Truncation shrinks vectors and indexes; in the paper it
        also often helps STS.
    beta : float
        Fraction of the mean subtracted. Only used by ``transform``, so it can change without a
        refit.
    gamma : float
        Exponent of the variance equalisation (1 whitens, 0 only rotates).
    drop_top : int
        Leading principal directions D left out before the k kept ones. With β = 1 and γ = 0
        this is "all-but-the-top" (Mu & Viswanath 2018): the mean and the D dominant directions,
        which carry frequency and length rather than meaning, are removed, then the vector is
        truncated to the next k directions.
    shrinkage : float
        ε: adds ε times the mean eigenvalue to every eigenvalue before ``^(−γ/2)``, so small
        directions are amplified less than by plain whitening (ε → ∞ tends to a rotation up to
        scale). Relative to the mean eigenvalue, so the same ε suits any vector scale.
    eigenvalue_floor : float
        Directions whose variance is at most ``eigenvalue_floor`` times the largest have none:
        they are rounding noise (float32 vectors put it near 1e-15; the LayerNorm that ends a
        BERT leaves one such direction, n samples leave d − n + 1) and do not count in
        ``rank_``. So no kept direction is scaled by more than ``eigenvalue_floor^(−γ/2)``
        relative to the first.
    cap_n_components : bool
        When n_components exceeds ``rank_``, keep ``rank_`` components instead of raising.

    Attributes
    ----------
    mean_ : np.ndarray of shape (n_features,)
        μ, the mean of the fitted vectors.
    components_ : np.ndarray of shape (n_features, n_components_)
        ``U[:, D:D+k] · (Λ[D:D+k] + ε·λ̄)^(−γ/2)``. Columns (PCA stores rows) so that the
        transform reads ``x @ components_``. Each eigenvector's largest-magnitude entry is
        positive, so refits on the same data give the same signs.
    explained_variance_ : np.ndarray of shape (n_features,)
        All eigenvalues Λ of the covariance, descending.
    rank_ : int
        Directions with variance: eigenvalues above ``eigenvalue_floor`` times the largest, and
        at most n_samples − 1.
    n_components_ : int
        k.
    n_features_in_ : int
        Dimension of the input vectors.
    n_samples_seen_ : int
        Number of vectors the statistics were computed from.
    moments_ : Moments
        The streamed statistics; ``partial_fit`` adds to them.
    metadata : TransformMetadata
        Set by ``from_pretrained`` only: what the loaded transform was fitted for.
    """

    def __init__(
        self,
        n_components: int | None = None,
        beta: float = 1.0,
        gamma: float = 1.0,
        eigenvalue_floor: float = 1e-8,
        *,
        cap_n_components: bool = False,
        drop_top: int = 0,
        shrinkage: float = 0.0,
    ) -> None:
        self.n_components = n_components
        self.beta = beta
        self.gamma = gamma
        self.eigenvalue_floor = eigenvalue_floor
        self.cap_n_components = cap_n_components
        self.drop_top = drop_top
        self.shrinkage = shrinkage

    method = "whitening"

    def _fit(self, X: np.ndarray) -> Whitening:
        return self._fit_moments(_moments_of(X))

    def partial_fit(self, X: Any, y: Any = None) -> Whitening:
        """Add ``X`` to the statistics seen so far and refit.

        Each call recomputes the eigendecomposition (~0.1 s at d = 768); to stream many small
        chunks, accumulate a :class:`Moments` and call :meth:`fit_moments` once. On error the
        estimator keeps its previous state.
        """
        if not hasattr(self, "moments_"):
            return self._fit(check_array(X))
        X = self._check_input(X, "partial_fit")
        return self._fit_moments(self.moments_.merge(_moments_of(X)))

    def fit_moments(self, moments: Moments) -> Whitening:
        """Fit on statistics computed elsewhere (e.g. merged by a map/reduce job); keeps a copy."""
        return self._fit_moments(copy.deepcopy(moments))

    def transform(self, X: Any) -> np.ndarray:
        """Transform ``X`` of shape (n_samples, n_features) to float32 (n_samples, n_components_).

        Computed in float64: with full whitening, the smallest eigenvalues amplify rounding.
        """
        X = self._check_input(X, "transform")
        shift = self.beta * self.mean_
        out = np.empty((X.shape[0], self.n_components_), dtype=np.float32)
        for start in range(0, X.shape[0], BLOCK_ROWS):
            block = X[start : start + BLOCK_ROWS].astype(np.float64)
            out[start : start + BLOCK_ROWS] = (block - shift) @ self.components_
        return out

    def _artifact_contents(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        tensors = {
            "mean": self.mean_,
            "components": self.components_,
            "explained_variance": self.explained_variance_,
            "moments.sum": self.moments_.sum,
            "moments.sum_outer": self.moments_.sum_outer,
        }
        fields = {
            "method": "whitening",
            "beta": self.beta,
            "gamma": self.gamma,
            "eigenvalue_floor": self.eigenvalue_floor,
        }
        # Only when set, so plain whitenings keep the digests they had before these existed.
        if self.drop_top:
            fields["drop_top"] = self.drop_top
        if self.shrinkage:
            fields["shrinkage"] = self.shrinkage
        return tensors, fields

    @classmethod
    def _expected_shapes(cls, metadata: TransformMetadata) -> dict[str, tuple[int, ...]]:
        d, k = metadata.n_features_in, metadata.n_components
        return {
            "mean": (d,),
            "components": (d, k),
            "explained_variance": (d,),
            "moments.sum": (d,),
            "moments.sum_outer": (d, d),
        }

    @classmethod
    def _from_artifact(
        cls, tensors: dict[str, np.ndarray], metadata: TransformMetadata, **options: Any
    ) -> Whitening:
        # The metadata validator requires both for whitening.
        assert metadata.beta is not None and metadata.gamma is not None
        whitening = cls(
            n_components=metadata.n_components,
            beta=metadata.beta,
            gamma=metadata.gamma,
            eigenvalue_floor=metadata.eigenvalue_floor,
            drop_top=metadata.drop_top or 0,
            shrinkage=metadata.shrinkage or 0.0,
            **options,
        )
        whitening._set_fitted(
            mean=tensors["mean"],
            components=tensors["components"],
            explained_variance=tensors["explained_variance"],
            moments=Moments(
                metadata.n_samples, tensors["moments.sum"], tensors["moments.sum_outer"]
            ),
        )
        return whitening

    def _fit_moments(self, moments: Moments) -> Whitening:
        self.check_params(moments.dim)
        eigenvalues, eigenvectors = np.linalg.eigh(moments.covariance)
        # Descending; negative eigenvalues of a covariance are rounding noise.
        eigenvalues = np.clip(eigenvalues[::-1], 0.0, None)
        eigenvectors = eigenvectors[:, ::-1]
        if eigenvalues[0] == 0.0:
            raise UsageError(
                "all fitted vectors are identical (zero covariance); nothing to whiten"
            )
        k = self._n_components(_rank(eigenvalues, self.eigenvalue_floor, moments.n), moments.n)
        columns = np.arange(eigenvectors.shape[1])
        largest = np.argmax(np.abs(eigenvectors), axis=0)
        eigenvectors = eigenvectors * np.sign(eigenvectors[largest, columns])
        kept = slice(self.drop_top, self.drop_top + k)
        self._set_fitted(
            mean=moments.mean,
            components=eigenvectors[:, kept]
            * (eigenvalues[kept] + self.shrinkage * eigenvalues.mean()) ** (-self.gamma / 2),
            explained_variance=eigenvalues,
            moments=moments,
        )
        return self

    def _n_components(self, rank: int, n_samples: int) -> int:
        """k for a covariance of this rank: n_components, capped or refused above the directions
        with variance left after the ``drop_top`` leading ones."""
        left = rank - self.drop_top
        where = (
            f"the rank of the covariance, {rank}"
            + (f", less drop_top={self.drop_top}" if self.drop_top else "")
            + f" (directions with variance above {self.eigenvalue_floor:g} × the largest, from "
            f"{n_samples} vectors)"
        )
        if left < 1:
            raise UsageError(f"no direction with variance is left: {where}")
        if self.n_components is None or (self.cap_n_components and self.n_components > left):
            return left
        if self.n_components > left:
            raise UsageError(
                f"n_components={self.n_components} exceeds {where}; the extra components would "
                f"be noise scaled up. Keep at most {left}, fit on more vectors, or cap to the "
                "rank (cap_n_components=True, `baihua fit --cap-n-components`)"
            )
        return int(self.n_components)

    def _set_fitted(
        self,
        *,
        mean: np.ndarray,
        components: np.ndarray,
        explained_variance: np.ndarray,
        moments: Moments,
    ) -> None:
        self.mean_ = np.array(mean, dtype=np.float64)
        self.components_ = np.array(components, dtype=np.float64, order="C")
        self.explained_variance_ = np.array(explained_variance, dtype=np.float64)
        self.n_components_ = int(self.components_.shape[1])
        self.n_features_in_ = int(self.mean_.shape[0])
        self.n_samples_seen_ = moments.n
        self.moments_ = moments
        self.rank_ = _rank(self.explained_variance_, self.eigenvalue_floor, moments.n)

    def check_params(self, n_features: int | None = None) -> None:
        """Raise UsageError for hyperparameters that cannot work (against the input width
        ``n_features`` once it is known)."""
        D, k = self.drop_top, self.n_components
        require_integer("drop_top", D, 0, None if n_features is None else n_features - 1)
        if k is not None:
            room = None if n_features is None else n_features - D
            note = " (or None: every direction with variance)"
            if room is not None:
                note = f" = n_features - drop_top{note}"
            require_integer("n_components", k, 1, room, note)
        require_finite("shrinkage", self.shrinkage, "a finite number >= 0")
        if self.shrinkage < 0:
            raise UsageError(f"shrinkage must be a finite number >= 0, got {self.shrinkage!r}")
        require_finite("beta", self.beta)
        require_finite("gamma", self.gamma)
        floor = self.eigenvalue_floor
        require_finite("eigenvalue_floor", floor, "a number between 0 and 1 (exclusive)")
        if not 0 < floor < 1:
            raise UsageError(
                f"eigenvalue_floor must be a number between 0 and 1 (exclusive), got {floor!r}"
            )


register_transform("whitening", Whitening.from_pretrained)
