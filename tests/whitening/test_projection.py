"""The JL baseline: a seeded Gaussian random projection, checked against scikit-learn's."""

from pathlib import Path

import numpy as np
import pytest
from sklearn.random_projection import GaussianRandomProjection

from baihua.core.spec import EmbeddingSpec
from baihua.whitening import NotFittedError, load_transform, read_metadata
from baihua.whitening.projection import RandomProjection


def test_equals_sklearn_gaussian_random_projection_with_the_same_seed() -> None:
    x = np.random.default_rng(0).standard_normal((50, 40))
    ours = RandomProjection(16, seed=7).fit_transform(x)
    theirs = GaussianRandomProjection(16, random_state=7).fit_transform(x)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_matrix_is_the_direct_numpy_draw_and_depends_only_on_seed_and_shape() -> None:
    x = np.random.default_rng(1).standard_normal((20, 30))
    projection = RandomProjection(8, seed=3).fit(x)
    direct = np.random.RandomState(3).normal(0.0, 1 / np.sqrt(8), (8, 30)).T
    np.testing.assert_array_equal(projection.components_, direct)
    np.testing.assert_allclose(projection.transform(x), x @ direct, rtol=1e-5, atol=1e-6)
    other = RandomProjection(8, seed=3).fit_features(30)
    np.testing.assert_array_equal(other.components_, projection.components_)
    assert not np.array_equal(RandomProjection(8, seed=4).fit(x).components_, direct)


def test_squared_norms_are_kept_on_average_as_johnson_lindenstrauss_says() -> None:
    x = np.random.default_rng(2).standard_normal((400, 384))
    y = RandomProjection(256, seed=0).fit_transform(x)
    ratio = (y.astype(np.float64) ** 2).sum(axis=1) / (x**2).sum(axis=1)
    assert abs(ratio.mean() - 1) < 0.02
    # Var of the ratio is 2/k: every vector within 5 standard deviations.
    assert np.abs(ratio - 1).max() < 5 * np.sqrt(2 / 256)


def test_saved_projection_loads_through_load_transform(tmp_path: Path) -> None:
    x = np.random.default_rng(3).standard_normal((10, 12))
    projection = RandomProjection(5, seed=11).fit(x)
    spec = EmbeddingSpec(model="m", weights="a" * 64, pooling="last-avg", max_length=64)
    projection.save_pretrained(tmp_path / "jl", spec=spec)
    metadata = read_metadata(tmp_path / "jl")
    assert (metadata.method, metadata.seed, metadata.n_components) == ("jl", 11, 5)
    loaded = load_transform(tmp_path / "jl")
    assert isinstance(loaded, RandomProjection)
    np.testing.assert_array_equal(loaded.transform(x), projection.transform(x))


@pytest.mark.parametrize(
    "kwargs,message",
    [({"n_components": 0}, "n_components"), ({"n_components": 4, "seed": -1}, "seed")],
)
def test_bad_parameters_are_named(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RandomProjection(**kwargs).fit(np.ones((2, 6)))


def test_transform_needs_a_fit_and_the_fitted_dimension() -> None:
    with pytest.raises(NotFittedError, match="fit"):
        RandomProjection(4).transform(np.ones((2, 6)))
    with pytest.raises(ValueError, match="expecting 6 features"):
        RandomProjection(4).fit(np.ones((2, 6))).transform(np.ones((2, 5)))
