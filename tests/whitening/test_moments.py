import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import baihua.whitening.moments
from baihua.whitening import Moments


def _vectors(seed: int, n: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * rng.uniform(0.1, 3.0, d) + rng.uniform(-5, 5, d)


def _moments(x: np.ndarray) -> Moments:
    moments = Moments.empty(x.shape[1])
    moments.update(x)
    return moments


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 60), d=st.integers(1, 10))
def test_mean_and_covariance_match_numpy_population_statistics(seed: int, n: int, d: int) -> None:
    x = _vectors(seed, n, d)
    moments = _moments(x)
    assert moments.n == n
    np.testing.assert_allclose(moments.mean, x.mean(axis=0), rtol=1e-12, atol=1e-12)
    expected = np.cov(x.T, bias=True).reshape(d, d)
    np.testing.assert_allclose(moments.covariance, expected, rtol=1e-9, atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 60), data=st.data())
def test_merge_of_two_halves_equals_moments_of_the_whole(
    seed: int, n: int, data: st.DataObject
) -> None:
    x = _vectors(seed, n, 5)
    split = data.draw(st.integers(1, n - 1))
    merged = _moments(x[:split]).merge(_moments(x[split:]))
    whole = _moments(x)
    assert merged.n == whole.n
    np.testing.assert_allclose(merged.sum, whole.sum, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(merged.sum_outer, whole.sum_outer, rtol=1e-13, atol=1e-12)


def test_merge_with_empty_moments_is_identity_and_leaves_inputs_unchanged() -> None:
    a = _moments(_vectors(0, 10, 3))
    before = (a.n, a.sum.copy(), a.sum_outer.copy())
    merged = a.merge(Moments.empty(3))
    assert merged is not a
    assert (a.n, merged.n) == (before[0], before[0])
    np.testing.assert_array_equal(a.sum, before[1])
    np.testing.assert_array_equal(merged.sum_outer, before[2])


def test_update_accumulates_float32_input_in_float64() -> None:
    x = _vectors(1, 50, 4).astype(np.float32)
    moments = _moments(x)
    assert moments.sum.dtype == np.float64 and moments.sum_outer.dtype == np.float64
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(moments.sum, x64.sum(axis=0), rtol=1e-14)
    np.testing.assert_allclose(moments.sum_outer, x64.T @ x64, rtol=1e-14)


def test_update_in_blocks_equals_update_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    x = _vectors(2, 103, 4)
    whole = _moments(x)
    monkeypatch.setattr(baihua.whitening.moments, "BLOCK_ROWS", 10)
    blocked = _moments(x)
    np.testing.assert_allclose(blocked.sum_outer, whole.sum_outer, rtol=1e-13)
    np.testing.assert_allclose(blocked.sum, whole.sum, rtol=1e-13)


def test_covariance_needs_two_vectors() -> None:
    moments = _moments(np.ones((1, 3)))
    with pytest.raises(ValueError, match="at least 2 vectors, got n_samples=1"):
        _ = moments.covariance


def test_mean_of_empty_moments_is_an_error() -> None:
    with pytest.raises(ValueError, match="mean of no vectors"):
        _ = Moments.empty(3).mean


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.ones(3), "2-D array"),
        (np.ones((2, 4)), "x has 4 features, but these moments have 3"),
        (np.array([[1.0, np.nan, 0.0]]), r"NaN or infinity \(first at row 0\)"),
        (np.array([[0.0, 0.0, 0.0], [1.0, np.inf, 0.0]]), r"NaN or infinity \(first at row 1\)"),
        (np.ones((0, 3)), "empty"),
        (np.array([["a", "b", "c"]]), "real numbers"),
    ],
)
def test_update_rejects_bad_input_and_keeps_state(x: np.ndarray, message: str) -> None:
    moments = Moments.empty(3)
    with pytest.raises(ValueError, match=message):
        moments.update(x)
    assert moments.n == 0 and not moments.sum.any()


def test_merge_of_different_dimensions_is_an_error() -> None:
    with pytest.raises(ValueError, match="dimension 3 and 4"):
        Moments.empty(3).merge(Moments.empty(4))


def test_save_load_round_trip_keeps_values_and_extra_fields(tmp_path: Path) -> None:
    moments = _moments(_vectors(3, 20, 5))
    path = tmp_path / "moments.safetensors"
    moments.save(path, lines_done=20, corpus="zh.txt")
    loaded, extra = Moments.load(path)
    assert loaded.n == 20
    np.testing.assert_array_equal(loaded.sum, moments.sum)
    np.testing.assert_array_equal(loaded.sum_outer, moments.sum_outer)
    assert extra == {"lines_done": 20, "corpus": "zh.txt"}
    assert isinstance(extra["lines_done"], int)


def test_save_rejects_extra_fields_that_are_not_int_or_str(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="'ratio' must be int or str"):
        Moments.empty(2).save(tmp_path / "m", ratio=0.5)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())


def test_failed_save_keeps_the_previous_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "moments.safetensors"
    _moments(_vectors(4, 10, 3)).save(path, lines_done=10)
    before = path.read_bytes()

    def failing_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        _moments(_vectors(5, 30, 3)).save(path, lines_done=30)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert Moments.load(path)[1] == {"lines_done": 10}


def test_load_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        Moments.load(path)


def test_load_corrupt_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="broken.safetensors is not a readable moments file"):
        Moments.load(path)


@pytest.mark.parametrize(
    ("n", "sum_", "sum_outer", "message"),
    [
        (1, np.zeros(3), np.zeros((3, 2)), "sum_outer of shape"),
        (-1, np.zeros(3), np.zeros((3, 3)), "n >= 0"),
    ],
)
def test_constructor_validates_shapes_and_count(
    n: int, sum_: np.ndarray, sum_outer: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Moments(n, sum_, sum_outer)
