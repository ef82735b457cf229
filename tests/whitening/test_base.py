"""The shared estimator base: scikit-learn's API, its estimator checks, and checked loading."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from baihua.core.errors import UsageError
from baihua.core.spec import EmbeddingSpec
from baihua.whitening import ArtifactError, Flow, NotFittedError, TransformBase, Whitening

# scikit-learn's check data has 1, 3 or 5 features; a flow needs n_features divisible by
# 2**n_levels, so these checks cannot fit one (the error says so, see test_flow.py).
ODD_WIDTH = "sklearn's check data has an odd n_features; a flow needs an even one"
FLOW_ODD_WIDTH_CHECKS = {
    name: ODD_WIDTH
    for name in [
        "check_dict_unchanged",
        "check_dont_overwrite_parameters",
        "check_estimators_dtypes",
        "check_estimators_nan_inf",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_fit2d_1feature",
        "check_fit2d_predict1d",
        "check_fit_score_takes_y",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_pipeline_consistency",
        "check_transformer_data_not_an_array",
        "check_transformer_general",
        "check_transformer_preserve_dtypes",
    ]
}


SPEC = EmbeddingSpec(model="m", weights="a" * 64, pooling="cls", max_length=8)


def expected_failures(estimator: TransformBase) -> dict[str, str]:
    return FLOW_ODD_WIDTH_CHECKS if isinstance(estimator, Flow) else {}


@parametrize_with_checks(
    [Whitening(), Whitening(n_components=1, beta=0.0, gamma=0.0), Flow(n_levels=1, device="cpu")],
    expected_failed_checks=expected_failures,
)
def test_sklearn_estimator_checks(estimator: TransformBase, check: Callable[..., None]) -> None:
    check(estimator)


def vectors(n: int = 64, d: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d) + 1.0


@pytest.mark.parametrize(
    "estimator", [Whitening(n_components=4, gamma=0.5), Flow(n_levels=2, epochs=2, device="cpu")]
)
def test_clone_copies_the_hyperparameters_not_the_fit(estimator: TransformBase) -> None:
    estimator.fit(vectors())
    copy = clone(estimator)
    assert copy.get_params() == estimator.get_params()
    assert not hasattr(copy, "n_features_in_")
    with pytest.raises(NotFittedError, match="not fitted yet; call fit before transform"):
        copy.transform(vectors())


def test_set_params_refits_with_the_new_value() -> None:
    whitening = Whitening(n_components=2).fit(vectors())
    assert whitening.set_params(n_components=3).fit(vectors()).n_components_ == 3


def test_set_params_names_the_valid_parameters() -> None:
    with pytest.raises(UsageError, match="invalid parameter 'k' for Whitening; valid parameters"):
        Whitening().set_params(k=3)


def test_repr_shows_the_parameters_that_differ_from_the_defaults() -> None:
    assert repr(Whitening()) == "Whitening()"
    assert repr(Whitening(n_components=4, beta=0.0)) == "Whitening(beta=0.0, n_components=4)"


def test_a_transform_works_inside_a_pipeline_and_ignores_y() -> None:
    X = vectors()
    pipeline = make_pipeline(StandardScaler(), Whitening(n_components=3))
    out = pipeline.fit(X, np.arange(len(X))).transform(X)
    np.testing.assert_allclose(np.cov(out.T, bias=True), np.eye(3), atol=1e-6)


def test_loading_an_artifact_as_the_wrong_class_is_refused(tmp_path: Path) -> None:
    Whitening(n_components=4).fit(vectors()).save_pretrained(tmp_path / "w", spec=SPEC)
    with pytest.raises(ArtifactError, match="holds a 'whitening' transform, not flow"):
        Flow.from_pretrained(tmp_path / "w")


def test_an_artifact_with_an_unexpected_tensor_is_refused(tmp_path: Path) -> None:
    import safetensors.numpy

    Whitening(n_components=4).fit(vectors()).save_pretrained(tmp_path / "w", spec=SPEC)
    weights = tmp_path / "w" / "model.safetensors"
    tensors = safetensors.numpy.load_file(weights)
    safetensors.numpy.save_file({**tensors, "extra": np.zeros(3)}, weights)
    with pytest.raises(ArtifactError, match="tensor 'extra' should have shape nothing but has"):
        Whitening.from_pretrained(tmp_path / "w")
