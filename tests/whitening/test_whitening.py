import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.decomposition import PCA

from baihua.core.errors import UsageError
from baihua.core.spec import EmbeddingSpec
from baihua.whitening import Moments, NotFittedError, Whitening


def _vectors(seed: int, n: int, d: int) -> np.ndarray:
    """Anisotropic, offset, well-conditioned vectors (variances 0.01 to 9, random rotation)."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((d, d)))
    scaled = rng.standard_normal((n, d)) * rng.uniform(0.1, 3.0, d)
    return scaled @ rotation + rng.uniform(-5, 5, d)


def _align_signs(y: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Flip the columns of ``y`` to point the way ``reference``'s do (eigenvectors have no sign)."""
    return y * np.sign(np.sum(y * reference, axis=0))


shapes = st.integers(1, 12).flatmap(
    lambda d: st.tuples(st.just(d), st.integers(3 * d + 2, 120), st.integers(1, d))
)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shape=shapes)
def test_components_whiten_the_covariance(seed: int, shape: tuple[int, int, int]) -> None:
    d, n, k = shape
    w = Whitening(n_components=k).fit(_vectors(seed, n, d))
    W, covariance = w.components_, w.moments_.covariance
    np.testing.assert_allclose(W.T @ covariance @ W, np.eye(k), atol=1e-9)


@pytest.mark.parametrize("k", [3, 8])
def test_transformed_fitting_vectors_have_zero_mean_and_identity_covariance(k: int) -> None:
    x = _vectors(0, 300, 8)
    y = Whitening(n_components=k).fit_transform(x)
    assert y.shape == (300, k) and y.dtype == np.float32
    np.testing.assert_allclose(y.mean(axis=0), np.zeros(k), atol=1e-5)
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(k), atol=1e-5)


def test_matches_the_reference_implementation_up_to_its_n_minus_1_factor() -> None:
    # bojone/BERT-whitening, compute_kernel_bias and transform_and_normalize, verbatim.
    vecs, n_components = _vectors(1, 200, 10), 6
    mu = vecs.mean(axis=0, keepdims=True)
    cov = np.cov(vecs.T)
    u, s, vh = np.linalg.svd(cov)
    W = np.dot(u, np.diag(1 / np.sqrt(s)))
    kernel, bias = W[:, :n_components], -mu
    reference = (vecs + bias).dot(kernel)

    ours = Whitening(n_components=n_components).fit_transform(vecs)
    n = len(vecs)
    np.testing.assert_allclose(
        _align_signs(ours, reference) * np.sqrt((n - 1) / n), reference, atol=1e-5
    )


def test_matches_sklearn_pca_with_whitening_up_to_sign_and_n_minus_1_factor() -> None:
    x, k = _vectors(2, 150, 9), 5
    pca = PCA(n_components=k, whiten=True, svd_solver="full")
    expected = pca.fit_transform(x)
    w = Whitening(n_components=k)
    ours = w.fit_transform(x)
    n = len(x)
    np.testing.assert_allclose(
        _align_signs(ours, expected) * np.sqrt((n - 1) / n), expected, atol=1e-5
    )
    np.testing.assert_allclose(w.explained_variance_[:k], pca.explained_variance_ * (n - 1) / n)
    np.testing.assert_allclose(w.mean_, pca.mean_, rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), d=st.integers(1, 10), n=st.integers(2, 40))
def test_beta_gamma_zero_at_full_dimension_preserves_norms_and_inner_products(
    seed: int, d: int, n: int
) -> None:
    x = _vectors(seed, n, d)
    fit_on = _vectors(seed + 1, 4 * d + 2, d)
    y = Whitening(beta=0.0, gamma=0.0).fit(fit_on).transform(x)
    scale = np.abs(x @ x.T).max()
    np.testing.assert_allclose(y @ y.T, x @ x.T, atol=1e-5 * scale)
    np.testing.assert_allclose(
        np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-5, atol=1e-6
    )


def test_beta_gamma_zero_truncated_is_a_projection_on_the_top_eigenvectors() -> None:
    x = _vectors(3, 200, 8)
    w = Whitening(n_components=3, beta=0.0, gamma=0.0).fit(x)
    np.testing.assert_allclose(w.components_.T @ w.components_, np.eye(3), atol=1e-12)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(x.T, bias=True))
    top = eigenvectors[:, ::-1][:, :3]
    np.testing.assert_allclose(_align_signs(w.components_, top), top, atol=1e-10)


def test_general_beta_gamma_follow_su_formula() -> None:
    x, k, beta, gamma = _vectors(4, 200, 6), 4, 0.5, 0.5
    w = Whitening(n_components=k, beta=beta, gamma=gamma).fit(x)
    u, s, _ = np.linalg.svd(np.cov(x.T, bias=True))
    components = u[:, :k] * s[:k] ** (-gamma / 2)
    np.testing.assert_allclose(_align_signs(w.components_, components), components, rtol=1e-9)
    expected = (x - beta * x.mean(axis=0)) @ _align_signs(w.components_, components)
    np.testing.assert_allclose(_align_signs(w.transform(x), expected), expected, rtol=1e-5)


def test_beta_applies_at_transform_time_without_refit() -> None:
    x = _vectors(5, 100, 4)
    w = Whitening().fit(x)
    w.beta = 0.0
    np.testing.assert_allclose(w.transform(x), x @ w.components_, rtol=1e-5, atol=1e-5)


def test_explained_variance_is_all_eigenvalues_descending() -> None:
    x = _vectors(6, 100, 7)
    w = Whitening(n_components=2).fit(x)
    expected = np.sort(np.linalg.eigvalsh(np.cov(x.T, bias=True)))[::-1]
    np.testing.assert_allclose(w.explained_variance_, expected, rtol=1e-10)
    assert (w.n_components_, w.n_features_in_, w.n_samples_seen_) == (2, 7, 100)


def test_n_components_none_keeps_all_dimensions() -> None:
    w = Whitening().fit(_vectors(7, 50, 5))
    assert w.n_components_ == 5 and w.components_.shape == (5, 5)


def test_each_eigenvectors_largest_entry_is_positive_so_refits_agree() -> None:
    x = _vectors(8, 120, 6)
    w = Whitening().fit(x)
    columns = np.arange(6)
    largest = np.argmax(np.abs(w.components_), axis=0)
    assert (w.components_[largest, columns] > 0).all()
    refit = Whitening().fit(x[::-1])
    np.testing.assert_allclose(refit.components_, w.components_, atol=1e-10)


def test_chunked_partial_fit_equals_one_fit() -> None:
    x = _vectors(9, 500, 8)
    streamed = Whitening(n_components=5)
    for chunk in np.array_split(x, 7):
        streamed.partial_fit(chunk)
    whole = Whitening(n_components=5).fit(x)
    assert streamed.n_samples_seen_ == 500
    np.testing.assert_allclose(streamed.mean_, whole.mean_, atol=1e-10)
    np.testing.assert_allclose(streamed.components_, whole.components_, atol=1e-10)


def test_fit_moments_equals_fit_and_keeps_its_own_copy() -> None:
    x = _vectors(10, 200, 6)
    moments = Moments.empty(6)
    moments.update(x)
    w = Whitening(n_components=4).fit_moments(moments)
    moments.update(x[:10])
    assert w.n_samples_seen_ == w.moments_.n == 200
    whole = Whitening(n_components=4).fit(x)
    np.testing.assert_allclose(w.components_, whole.components_, atol=1e-12)


def _rank_3_in_5d() -> np.ndarray:
    return _vectors(11, 100, 3) @ np.random.default_rng(0).standard_normal((3, 5))


def test_none_keeps_the_directions_with_variance_of_rank_deficient_vectors() -> None:
    w = Whitening().fit(_rank_3_in_5d())
    assert w.rank_ == w.n_components_ == 3
    np.testing.assert_allclose(
        np.cov(w.transform(_rank_3_in_5d()).T, bias=True), np.eye(3), atol=1e-8
    )


def test_n_components_above_the_rank_is_refused() -> None:
    with pytest.raises(UsageError, match="n_components=4 exceeds the rank of the covariance, 3"):
        Whitening(n_components=4).fit(_rank_3_in_5d())


def test_cap_n_components_keeps_the_rank() -> None:
    w = Whitening(n_components=5, cap_n_components=True).fit(_rank_3_in_5d())
    assert (w.n_components, w.n_components_) == (5, 3)


def test_drop_top_counts_against_the_rank() -> None:
    assert Whitening(drop_top=1).fit(_rank_3_in_5d()).n_components_ == 2
    with pytest.raises(UsageError, match="3, less drop_top=1"):
        Whitening(n_components=3, drop_top=1).fit(_rank_3_in_5d())
    with pytest.raises(UsageError, match="no direction with variance is left"):
        Whitening(drop_top=3).fit(_rank_3_in_5d())


def test_n_vectors_give_a_rank_of_at_most_n_minus_1() -> None:
    x = _vectors(13, 300, 384)[:300]  # the case: 300 sentences, --n-components 300
    with pytest.raises(UsageError, match="exceeds the rank of the covariance, 299"):
        Whitening(n_components=300).fit(x)
    w = Whitening(n_components=299).fit(x)
    assert np.linalg.norm(w.components_, axis=0).max() < 1e4 * np.linalg.norm(w.components_[:, 0])


def test_the_layernorm_direction_of_bert_vectors_is_outside_the_rank() -> None:
    x = _vectors(14, 200, 8)
    x -= x.mean(axis=1, keepdims=True)  # LayerNorm's output: every row sums to 0
    assert Whitening().fit(x.astype(np.float32)).rank_ == 7


def test_transform_output_is_float32_for_any_real_input() -> None:
    x = _vectors(12, 40, 3)
    w = Whitening().fit(x)
    for batch in (x.astype(np.float32), x.tolist(), np.round(x).astype(np.int64)):
        assert w.transform(batch).dtype == np.float32


@pytest.mark.parametrize(
    ("estimator", "x", "message"),
    [
        (
            Whitening(n_components=6),
            np.ones((10, 5)),
            "n_components must be an integer between 1",
        ),
        (Whitening(n_components=0), _vectors(0, 10, 5), "n_components must be an integer"),
        (Whitening(), np.ones(5), "2-D array of shape"),
        (Whitening(), np.array([[1.0, 2.0], [np.nan, 1.0]]), r"NaN or infinity \(first at row 1\)"),
        (Whitening(), np.ones((1, 5)), "at least 2 vectors, got n_samples=1"),
        (Whitening(), np.ones((4, 5)), "identical"),
        (Whitening(beta=float("nan")), _vectors(0, 10, 2), "beta must be a finite number"),
        (
            Whitening(eigenvalue_floor=0.0),
            _vectors(0, 10, 2),
            "eigenvalue_floor must be a number between 0 and 1",
        ),
    ],
)
def test_fit_rejects_bad_input_with_a_clear_message(
    estimator: Whitening, x: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        estimator.fit(x)
    assert not hasattr(estimator, "components_")


def test_transform_before_fit_raises_not_fitted_error() -> None:
    with pytest.raises(NotFittedError, match="not fitted yet") as raised:
        Whitening().transform(np.ones((2, 3)))
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, AttributeError)


def test_transform_rejects_a_different_number_of_features() -> None:
    w = Whitening().fit(_vectors(13, 20, 3))
    with pytest.raises(ValueError, match="X has 4 features, but Whitening is expecting 3 features"):
        w.transform(np.ones((2, 4)))


def test_failed_partial_fit_keeps_the_previous_fit() -> None:
    w = Whitening().fit(_vectors(14, 30, 3))
    before = copy.deepcopy(w.components_)
    with pytest.raises(ValueError, match="X has 2 features"):
        w.partial_fit(np.ones((5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        w.partial_fit(np.full((5, 3), np.nan))
    assert w.n_samples_seen_ == w.moments_.n == 30
    np.testing.assert_array_equal(w.components_, before)


def _eig(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors of the population covariance, by numpy."""
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(x.T, bias=True))
    return eigenvalues[::-1], eigenvectors[:, ::-1]


@pytest.mark.parametrize("gamma", [0.1, 0.25, 0.5])
def test_fractional_gamma_follows_the_direct_formula(gamma: float) -> None:
    x, k = _vectors(20, 300, 8), 5
    s, u = _eig(x)
    expected = (x - x.mean(axis=0)) @ (u[:, :k] * s[:k] ** (-gamma / 2))
    ours = Whitening(k, beta=1.0, gamma=gamma).fit(x).transform(x)
    np.testing.assert_allclose(_align_signs(ours, expected), expected, rtol=1e-4, atol=1e-5)
    # The transformed covariance is Λ^(1 − γ): between a rotation (γ = 0) and identity (γ = 1).
    np.testing.assert_allclose(np.cov(ours.T, bias=True), np.diag(s[:k] ** (1 - gamma)), atol=1e-4)


def test_all_but_the_top_removes_the_mean_and_top_directions_then_keeps_the_next() -> None:
    # Mu & Viswanath: x − μ − Σ_{i ≤ D} (u_iᵀ(x − μ)) u_i, then the next k coordinates.
    x, D, k = _vectors(21, 300, 9), 2, 4
    s, u = _eig(x)
    centred = x - x.mean(axis=0)
    removed = centred - centred @ u[:, :D] @ u[:, :D].T
    expected = removed @ u[:, D : D + k]
    ours = Whitening(k, beta=1.0, gamma=0.0, drop_top=D).fit(x).transform(x)
    np.testing.assert_allclose(_align_signs(ours, expected), expected, rtol=1e-4, atol=1e-5)


def test_shrinkage_adds_epsilon_times_the_mean_eigenvalue() -> None:
    x, k, eps, gamma = _vectors(22, 300, 7), 6, 0.3, 1.0
    s, u = _eig(x)
    expected = (x - x.mean(axis=0)) @ (u[:, :k] * (s[:k] + eps * s.mean()) ** (-gamma / 2))
    w = Whitening(k, shrinkage=eps).fit(x)
    np.testing.assert_allclose(_align_signs(w.transform(x), expected), expected, rtol=1e-4)
    covariance = w.moments_.covariance
    shrunk = np.diag(s[:k] / (s[:k] + eps * s.mean()))
    np.testing.assert_allclose(w.components_.T @ covariance @ w.components_, shrunk, atol=1e-9)


def test_drop_top_and_shrinkage_survive_save_and_load(tmp_path) -> None:
    x = _vectors(23, 100, 6)
    w = Whitening(3, beta=1.0, gamma=0.5, drop_top=1, shrinkage=0.2).fit(x)
    spec = EmbeddingSpec(model="m", weights="a" * 64, pooling="last-avg", max_length=64)
    w.save_pretrained(tmp_path / "w", spec=spec)
    loaded = Whitening.from_pretrained(tmp_path / "w")
    assert (loaded.drop_top, loaded.shrinkage) == (1, 0.2)
    np.testing.assert_array_equal(loaded.transform(x), w.transform(x))
    refit = copy.deepcopy(loaded).partial_fit(x)
    np.testing.assert_allclose(
        refit.components_,
        Whitening(3, 1.0, 0.5, drop_top=1, shrinkage=0.2).fit(np.concatenate([x, x])).components_,
        rtol=1e-7,
    )


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"n_components": 5, "drop_top": 2}, "between 1 and 4 = n_features - drop_top"),
        ({"drop_top": 6}, "drop_top must be an integer between 0 and 5, got 6"),
        ({"shrinkage": -0.1}, "shrinkage"),
    ],
)
def test_drop_top_and_shrinkage_are_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Whitening(**kwargs).fit(_vectors(24, 50, 6))


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=shapes,
    beta=st.sampled_from([0.0, 0.5, 1.0]),
    gamma=st.sampled_from([0.0, 0.5, 1.0]),
)
def test_the_first_k_columns_of_a_full_fit_are_the_k_fit(
    seed: int, shape: tuple[int, int, int], beta: float, gamma: float
) -> None:
    # what lets one full-rank artifact serve every `dimensions` by slicing
    d, n, k = shape
    x = _vectors(seed, n, d)
    full = Whitening(beta=beta, gamma=gamma).fit(x)
    at_k = Whitening(n_components=k, beta=beta, gamma=gamma).fit(x)
    np.testing.assert_array_equal(full.components_[:, :k], at_k.components_)
    np.testing.assert_array_equal(full.mean_, at_k.mean_)
    np.testing.assert_allclose(full.transform(x)[:, :k], at_k.transform(x), rtol=1e-6, atol=1e-6)
