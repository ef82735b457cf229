import copy
import dataclasses
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from baihua.core.spec import EmbeddingSpec
from baihua.whitening import (
    ArtifactError,
    ArtifactMismatchError,
    Flow,
    NotFittedError,
    Whitening,
    load_transform,
)
from baihua.whitening.flow import _Glow

MODEL = "intfloat/multilingual-e5-small"
SPEC = EmbeddingSpec(model=MODEL, weights="a" * 64, pooling="mean", max_length=64)


def _vectors(seed: int, n: int, d: int) -> np.ndarray:
    """Correlated, anisotropic, offset Gaussian vectors (variances 0.01 to 9, random rotation),
    like raw BERT vectors in miniature."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((d, d)))
    scaled = rng.standard_normal((n, d)) * rng.uniform(0.1, 3.0, d)
    return scaled @ rotation + rng.uniform(-5, 5, d)


def _perturbed(flow: Flow, seed: int) -> Flow:
    """A copy of ``flow`` with noise on every parameter, so no coupling is near the identity."""
    flow = copy.deepcopy(flow)
    _add_noise(flow.module_, seed)
    return flow


def _add_noise(module: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    # Larger noise compounds through the 9 steps into overflow.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


def _random_glow(n_features: int, n_levels: int, n_steps: int, seed: int) -> _Glow:
    """A freshly initialised Glow (data-dependent init on N(0, I)) with random weights."""
    generator = torch.Generator().manual_seed(seed)
    module = _Glow(n_features, n_levels, n_steps, hidden=32)
    module.reset_parameters(generator)
    module.initialize(torch.randn(64, n_features, generator=generator))
    _add_noise(module, seed)
    return module.eval()


def _jacobian(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.autograd.functional.jacobian(lambda v: module(v[None])[0][0], x)


def _mixing(jacobian: torch.Tensor) -> float:
    """The largest entry that is not the largest of its row: 0 for ActNorms and reversals alone
    (a scaled permutation), positive once a coupling makes an output depend on two inputs."""
    return jacobian.abs().sort(dim=1).values[:, -2].max().item()


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # Batches of 32 make tiny matmuls, which extra threads slow down on a shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fitted() -> Flow:
    return Flow(device="cpu").fit(_vectors(0, 2000, 16))


@pytest.fixture(scope="module")
def small() -> Flow:
    """D = 8, 2 levels × 2 steps, with random weights everywhere."""
    return _perturbed(Flow(n_levels=2, n_steps=2, device="cpu").fit(_vectors(1, 200, 8)), seed=1)


def _save(flow: Flow, path: Path) -> None:
    flow.save_pretrained(path, spec=SPEC)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_inverse_transform_undoes_transform_after_fitting(fitted: Flow, seed: int) -> None:
    x = _vectors(seed, 50, 16)
    np.testing.assert_allclose(fitted.inverse_transform(fitted.transform(x)), x, atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_levels=st.integers(1, 3),
    n_steps=st.integers(1, 3),
    width=st.sampled_from([1, 3]),
)
def test_inverse_undoes_a_fresh_flow_with_random_weights(
    seed: int, n_levels: int, n_steps: int, width: int
) -> None:
    # In float64: random weights can make float32 intermediates large enough to lose 1e-4.
    d = width * 2**n_levels
    module = _random_glow(d, n_levels, n_steps, seed).double()
    x = torch.randn(50, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():
        z = module(x)[0]
        torch.testing.assert_close(module.inverse(z), x, rtol=1e-6, atol=1e-7)
    assert _mixing(_jacobian(module, x[0])) > 0.01


def test_transform_keeps_shape_and_returns_float32(fitted: Flow) -> None:
    z = fitted.transform(_vectors(3, 7, 16))
    assert z.shape == (7, 16) and z.dtype == np.float32
    assert fitted.n_components_ == fitted.n_features_in_ == 16
    assert fitted.inverse_transform(z).dtype == np.float32


@pytest.mark.parametrize("seed", range(4))
def test_accumulated_log_det_equals_the_log_det_of_autograds_jacobian(seed: int) -> None:
    module = _random_glow(8, n_levels=2, n_steps=2, seed=seed).double()
    x = torch.randn(8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    jacobian = _jacobian(module, x)
    assert _mixing(jacobian) > 0.1
    sign, log_abs_det = torch.linalg.slogdet(jacobian)
    assert sign != 0
    torch.testing.assert_close(module(x[None])[1][0], log_abs_det, rtol=0, atol=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_score_samples_is_the_change_of_variables_density(small: Flow, seed: int) -> None:
    module = copy.deepcopy(small.module_).double()
    x = _vectors(seed, 1, 8)
    z = module(torch.from_numpy(x))[0][0].detach().numpy()
    log_abs_det = torch.linalg.slogdet(_jacobian(module, torch.from_numpy(x[0])))[1].item()
    expected = -0.5 * (z @ z) - 4 * math.log(2 * math.pi) + log_abs_det
    np.testing.assert_allclose(small.score_samples(x), [expected], rtol=1e-4)
    np.testing.assert_allclose(small.nll(x), -expected / 8, rtol=1e-4)


def test_data_dependent_init_standardises_the_first_batch() -> None:
    # At initialisation the couplings are the identity, so the whole flow is ActNorms,
    # reversals and splits: it maps the batch it was initialised on to zero mean, unit variance.
    x = torch.from_numpy(_vectors(2, 32, 16)).float()
    module = _Glow(16, n_levels=3, n_steps=3, hidden=32)
    module.reset_parameters(torch.Generator().manual_seed(0))
    module.initialize(x)
    z = module(x)[0].detach()
    torch.testing.assert_close(z.mean(dim=0), torch.zeros(16), rtol=0, atol=1e-5)
    torch.testing.assert_close(z.std(dim=0, correction=0), torch.ones(16), rtol=0, atol=1e-4)


def test_training_lowers_the_held_out_nll() -> None:
    x = _vectors(0, 2500, 16)
    train, held_out = x[:2000], x[2000:]
    flow = Flow(device="cpu").fit(train)
    # The initialised flow standardises each dimension with its first batch's statistics (see
    # above), so its held-out NLL is about that of this per-dimension Gaussian, or worse.
    mean, std = train.mean(axis=0), train.std(axis=0)
    per_dimension = np.mean(0.5 * ((held_out - mean) / std) ** 2 + np.log(std)) + 0.5 * math.log(
        2 * math.pi
    )
    assert flow.nll(held_out) < per_dimension - 0.1
    assert flow.nll(held_out) < flow.loss_curve_[0] - 0.05


def test_fit_records_one_loss_per_step_and_its_time() -> None:
    flow = Flow(n_levels=2, n_steps=1, epochs=2, batch_size=16, device="cpu")
    flow.fit(_vectors(0, 100, 8))
    assert len(flow.loss_curve_) == 2 * math.ceil(100 / 16)
    assert all(math.isfinite(loss) for loss in flow.loss_curve_)
    assert flow.fit_time_ > 0 and flow.n_samples_seen_ == 100


def test_the_same_seed_gives_the_same_flow_and_another_seed_another() -> None:
    x = _vectors(0, 200, 8)

    def fit(seed: int) -> np.ndarray:
        return Flow(n_levels=2, seed=seed, device="cpu").fit(x).transform(x)

    np.testing.assert_array_equal(fit(0), fit(0))
    assert np.abs(fit(0) - fit(1)).max() > 1e-3


def test_transformed_vectors_are_closer_to_isotropic(fitted: Flow) -> None:
    x = _vectors(0, 2000, 16)
    z = fitted.transform(x)
    assert np.linalg.cond(np.cov(z.T)) < np.linalg.cond(np.cov(x.T)) / 3

    def mean_cosine(v: np.ndarray) -> float:
        u = v / np.linalg.norm(v, axis=1, keepdims=True)
        pairs = np.random.default_rng(0).integers(0, len(v), (2, 5000))
        return float(np.mean(np.sum(u[pairs[0]] * u[pairs[1]], axis=1)))

    assert mean_cosine(x) > 0.3
    assert abs(mean_cosine(z)) < 0.05


def test_save_then_load_transform_gives_an_identical_flow(fitted: Flow, tmp_path: Path) -> None:
    _save(fitted, tmp_path / "flow")
    loaded = load_transform(tmp_path / "flow")
    assert isinstance(loaded, Flow)
    x = _vectors(5, 20, 16)
    # identical on the device it was fitted on; "auto" loads it onto a GPU where there is one
    devices = {next(flow.module_.parameters()).device for flow in (loaded, fitted)}
    tolerance = 0.0 if len(devices) == 1 else 1e-5
    np.testing.assert_allclose(loaded.transform(x), fitted.transform(x), rtol=0, atol=tolerance)
    np.testing.assert_allclose(
        loaded.score_samples(x), fitted.score_samples(x), rtol=tolerance, atol=tolerance
    )
    assert (loaded.n_components_, loaded.n_features_in_, loaded.n_samples_seen_) == (16, 16, 2000)
    hyperparameters = ("n_levels", "n_steps", "hidden", "lr", "epochs", "batch_size", "seed")
    for name in (*hyperparameters, "weight_decay"):
        assert getattr(loaded, name) == getattr(fitted, name)
    assert loaded.metadata.spec == SPEC.to_dict()


def test_metadata_records_the_flow_hyperparameters_and_no_beta_gamma(
    fitted: Flow, tmp_path: Path
) -> None:
    _save(fitted, tmp_path / "flow")
    stored = json.loads((tmp_path / "flow" / "transform.json").read_text())
    assert stored["method"] == "flow"
    assert (stored["n_features_in"], stored["n_components"], stored["n_samples"]) == (16, 16, 2000)
    assert stored["flow"] == {
        "n_levels": 3,
        "n_steps": 3,
        "hidden": 32,
        "lr": 1e-3,
        "epochs": 1,
        "batch_size": 32,
        "weight_decay": 0.01,
        "seed": 0,
    }
    assert "beta" not in stored and "gamma" not in stored


@pytest.mark.parametrize(("field", "value"), [("weights", "b" * 64), ("pooling", "cls")])
def test_loaded_flow_refuses_another_encoder_space(
    fitted: Flow, tmp_path: Path, field: str, value: str
) -> None:
    _save(fitted, tmp_path / "flow")
    loaded = Flow.from_pretrained(tmp_path / "flow")
    loaded.check_compatible(SPEC)
    with pytest.raises(ArtifactMismatchError, match=f"flow artifact was made in .*{field}"):
        loaded.check_compatible(dataclasses.replace(SPEC, **{field: value}))


def test_flow_fitted_in_memory_is_trusted_by_check_compatible(fitted: Flow) -> None:
    fitted.check_compatible(dataclasses.replace(SPEC, model="any", weights="c" * 64))


def test_flow_digest_is_kept_by_save_and_load(fitted: Flow, tmp_path: Path) -> None:
    _save(fitted, tmp_path / "flow")
    assert Flow.from_pretrained(tmp_path / "flow", device="cpu").digest() == fitted.digest()


def test_loading_a_whitening_artifact_as_a_flow_says_so(tmp_path: Path) -> None:
    w = Whitening().fit(_vectors(0, 50, 4))
    w.save_pretrained(tmp_path / "w", spec=SPEC)
    with pytest.raises(ArtifactError, match="'whitening' transform, not flow"):
        Flow.from_pretrained(tmp_path / "w")


def test_a_tensor_of_the_wrong_shape_is_reported(fitted: Flow, tmp_path: Path) -> None:
    _save(fitted, tmp_path / "flow")
    metadata = tmp_path / "flow" / "transform.json"
    stored = json.loads(metadata.read_text())
    stored["flow"]["hidden"] = 16
    metadata.write_text(json.dumps(stored))
    with pytest.raises(ArtifactError, match=r"should have shape \(16, 8\) but has \(32, 8\)"):
        load_transform(tmp_path / "flow")


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros(16), "must be a 2-D array"),
        (np.full((10, 16), np.nan), "contains NaN"),
        (np.ones((10, 15)), "divisible by 2\\*\\*3 = 8.*got 15; odd dimensions are not supported"),
        (np.ones((10, 12)), "divisible by 2\\*\\*3 = 8.*got 12; use n_levels <= 2"),
        (np.ones((1, 16)), "at least 2 vectors"),
    ],
)
def test_fit_rejects_bad_input_with_a_clear_message(x: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Flow(device="cpu").fit(x)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_levels": 0}, "n_levels"),
        ({"batch_size": 1}, "batch_size"),
        ({"lr": -1.0}, "lr"),
        ({"hidden": 2.5}, "hidden"),
        ({"weight_decay": math.nan}, "weight_decay"),
        ({"device": "tpu"}, "device must be 'auto', 'cpu'"),
    ],
)
def test_fit_rejects_bad_hyperparameters(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Flow(**params).fit(_vectors(0, 10, 8))  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_fit_on_cuda_without_cuda_says_so() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        Flow(device="cuda").fit(_vectors(0, 10, 8))


def test_transform_rejects_another_dimension_and_bad_input(fitted: Flow) -> None:
    with pytest.raises(ValueError, match="X has 8 features, but Flow is expecting 16 features"):
        fitted.transform(np.ones((3, 8)))
    with pytest.raises(ValueError, match="Z contains NaN"):
        fitted.inverse_transform(np.full((3, 16), np.nan))


@pytest.mark.parametrize("method", ["transform", "inverse_transform", "score_samples", "nll"])
def test_using_an_unfitted_flow_raises_not_fitted(method: str) -> None:
    with pytest.raises(NotFittedError, match="not fitted yet; call fit before"):
        getattr(Flow(), method)(np.ones((2, 8)))


def test_saving_an_unfitted_flow_raises_not_fitted(tmp_path: Path) -> None:
    with pytest.raises(NotFittedError):
        Flow().save_pretrained(tmp_path / "flow", spec=SPEC)


def test_diverging_training_raises_instead_of_returning_nan() -> None:
    with pytest.raises(FloatingPointError, match="lower lr"):
        Flow(lr=1e4, device="cpu").fit(_vectors(0, 200, 8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fits_on_cuda_and_loads_onto_cpu(tmp_path: Path) -> None:
    x = _vectors(0, 500, 16)
    flow = Flow(device="cuda").fit(x)
    assert next(flow.module_.parameters()).is_cuda
    np.testing.assert_allclose(flow.inverse_transform(flow.transform(x)), x, atol=1e-4)
    _save(flow, tmp_path / "flow")
    on_cpu = Flow.from_pretrained(tmp_path / "flow", device="cpu")
    np.testing.assert_allclose(on_cpu.transform(x), flow.transform(x), atol=1e-4)


def test_near_constant_channels_do_not_make_training_diverge() -> None:
    # all-MiniLM-L6-v2's cls vectors have channels of magnitude ~1e-32; scaling them to unit
    # variance in every ActNorm made the loss infinite after the first step.
    X = _vectors(0, 2000, 16)
    X[:, 3] = np.random.default_rng(1).standard_normal(2000) * 1e-32
    X[:, 9] = 1e-8
    flow = Flow().fit(X)
    assert all(math.isfinite(loss) for loss in flow.loss_curve_)
    assert np.isfinite(flow.transform(X)).all()
