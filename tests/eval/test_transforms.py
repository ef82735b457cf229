"""Each entry of the `--whitening` grammar against a direct numpy computation of its formula."""

from __future__ import annotations

import numpy as np
import pytest

from baihua.eval.transforms import fit_transform, parse_transform
from baihua.whitening import Moments


def _vectors(seed: int = 0, n: int = 400, d: int = 24) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (rng.standard_normal((n, d)) * rng.uniform(0.1, 3.0, d)) @ rotation + 2.0


def _direct(name: str, fit: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The formula of each grammar entry, from numpy's eigendecomposition and RNG."""
    s, u = np.linalg.eigh(np.cov(fit.T, bias=True))
    s, u = s[::-1], u[:, ::-1]
    mu = fit.mean(axis=0)
    formulas = {
        "rot-8": lambda: x @ u[:, :8],
        "8": lambda: (x - mu) @ (u[:, :8] / np.sqrt(s[:8])),
        "b1g0.25-8": lambda: (x - mu) @ (u[:, :8] * s[:8] ** -0.125),
        "b0.5g0.1-8": lambda: (x - 0.5 * mu) @ (u[:, :8] * s[:8] ** -0.05),
        "abtt2-8": lambda: (x - mu) @ u[:, 2:10],
        "shrink0.5-8": lambda: (x - mu) @ (u[:, :8] * (s[:8] + 0.5 * s.mean()) ** -0.5),
        "b0g0.5e0.2d1-8": lambda: x @ (u[:, 1:9] * (s[1:9] + 0.2 * s.mean()) ** -0.25),
        "jl-8": lambda: x @ np.random.RandomState(0).normal(0, 1 / np.sqrt(8), (8, 24)).T,
        "jl-8-s5": lambda: x @ np.random.RandomState(5).normal(0, 1 / np.sqrt(8), (8, 24)).T,
    }
    return formulas[name]()


NAMES = ["rot-8", "8", "b1g0.25-8", "b0.5g0.1-8", "abtt2-8", "shrink0.5-8", "b0g0.5e0.2d1-8",
         "jl-8", "jl-8-s5"]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_every_grammar_entry_equals_its_direct_formula(name: str) -> None:
    fit, x = _vectors(0), _vectors(1, 50)
    transform = fit_transform(parse_transform(name), fit)
    assert transform is not None
    ours = transform.transform(x)
    expected = _direct(name, fit, x)
    if not name.startswith("jl"):  # eigenvectors have no sign
        ours = ours * np.sign(np.sum(ours * expected, axis=0))
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", [n for n in NAMES if not n.startswith("jl")])
def test_fitting_from_shared_moments_equals_fitting_on_the_vectors(name: str) -> None:
    fit = _vectors(2)
    moments = Moments.empty(fit.shape[1])
    moments.update(fit)
    spec = parse_transform(name)
    direct, shared = fit_transform(spec, fit), fit_transform(spec, fit, moments)
    assert direct is not None and shared is not None
    np.testing.assert_allclose(shared.transform(fit), direct.transform(fit), rtol=1e-6)


@pytest.mark.parametrize(
    "name,fields",
    [
        ("abtt3-64", {"method": "whitening", "n_components": 64, "beta": 1.0, "gamma": 0.0,
                      "drop_top": 3}),
        ("shrink0.1-128", {"beta": 1.0, "gamma": 1.0, "shrinkage": 0.1}),
        ("b1g0.25e0.5d2-full", {"n_components": None, "gamma": 0.25, "shrinkage": 0.5,
                                "drop_top": 2}),
        ("jl-64", {"method": "jl", "n_components": 64, "seed": 0}),
        ("jl-64-s3", {"method": "jl", "seed": 3}),
    ],
)  # fmt: skip
def test_new_grammar_entries_parse_to_their_parameters(name: str, fields: dict) -> None:
    spec = parse_transform(name)
    assert {key: getattr(spec, key) for key in fields} == fields


@pytest.mark.parametrize("name", ["jl-full", "jl-", "abtt-8", "shrink-8", "b1g1d-8", "jl-8-3"])
def test_malformed_new_entries_are_errors(name: str) -> None:
    with pytest.raises(ValueError, match="transform"):
        parse_transform(name)


def test_dropping_more_directions_than_there_are_is_an_error() -> None:
    with pytest.raises(ValueError, match="abtt20-8.*dropping the top 20.*have 24"):
        fit_transform(parse_transform("abtt20-8"), _vectors())
