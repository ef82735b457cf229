"""The transform grammar of `baihua eval --whitening`.

- ``none``; ``flow`` (BERT-flow);
- ``full``, ``N``: whitening, all dims or the top N; ``rot-N``, ``rot-full``: β = γ = 0, rotation
  and truncation;
- ``b<β>g<γ>[e<ε>][d<D>]-<N|full>``: Su's β/γ (fractions allowed, e.g. ``b1g0.25-128``), with
  eigenvalue shrinkage ε and the top D principal directions dropped (see ``whitening.Whitening``);
- ``abtt<D>-<N>``: all-but-the-top, = ``b1g0d<D>-<N>`` (mean and top D directions removed, then
  the next N kept); ``shrink<ε>-<N>``: shrunk whitening, = ``b1g1e<ε>-<N>``;
- ``jl-<N>``, ``jl-<N>-s<seed>``: the Johnson–Lindenstrauss baseline, a seeded Gaussian random
  projection to N dims (seed 0 by default).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from baihua.core.errors import UsageError
from baihua.whitening import Flow, Moments, Whitening, load_transform
from baihua.whitening.artifact import Transform, read_metadata
from baihua.whitening.projection import RandomProjection

Method = Literal["none", "whitening", "flow", "jl", "artifact"]
_NUMBER = r"\d+(?:\.\d+)?"
_CUSTOM = re.compile(
    rf"^b(?P<beta>{_NUMBER})g(?P<gamma>{_NUMBER})(?:e(?P<eps>{_NUMBER}))?(?:d(?P<drop>\d+))?"
    r"-(?P<k>\d+|full)$"
)
_ABTT = re.compile(r"^abtt(?P<drop>\d+)-(?P<k>\d+|full)$")
_SHRINK = re.compile(rf"^shrink(?P<eps>{_NUMBER})-(?P<k>\d+|full)$")
_JL = re.compile(r"^jl-(?P<k>\d+)(?:-s(?P<seed>\d+))?$")
GRAMMAR = (
    "none, full, N, rot-N, rot-full, b<β>g<γ>[e<ε>][d<D>]-<N|full>, abtt<D>-<N>, "
    "shrink<ε>-<N>, jl-<N>[-s<seed>] or flow"
)


@dataclass(frozen=True)
class TransformSpec:
    """One grid row: ``method`` "whitening" covers every eigendecomposition entry (its
    ``n_components`` None: all dims), "jl" the random projection (``seed``)."""

    name: str
    method: Method
    n_components: int | None = None
    beta: float = 1.0
    gamma: float = 1.0
    shrinkage: float = 0.0
    drop_top: int = 0
    seed: int = 0
    path: Path | None = None  # method "artifact": a transform fitted earlier, used as it is

    @property
    def fits_moments(self) -> bool:
        """Fitted from the vectors' mean and covariance alone (so one Moments serves all)."""
        return self.method == "whitening"


def artifact_spec(path: Path) -> TransformSpec:
    """A saved artifact (`baihua fit`) as a grid row, named after its folder."""
    read_metadata(path)  # fails early, naming the folder, if it is no artifact
    return TransformSpec(f"artifact:{path.name}", "artifact", path=path)


def _dims(text: str, name: str) -> int | None:
    if text == "full":
        return None
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"unknown transform {name!r}: {text!r} is not a dimension or 'full'")
    return int(text)


def parse_transform(name: str) -> TransformSpec:
    if name in ("none", "flow"):
        return TransformSpec(name, name)  # type: ignore[arg-type]
    if name.startswith("rot-"):
        return TransformSpec(name, "whitening", _dims(name[4:], name), beta=0.0, gamma=0.0)
    if match := _CUSTOM.match(name):
        return TransformSpec(
            name,
            "whitening",
            _dims(match["k"], name),
            beta=float(match["beta"]),
            gamma=float(match["gamma"]),
            shrinkage=float(match["eps"] or 0),
            drop_top=int(match["drop"] or 0),
        )
    if match := _ABTT.match(name):
        k = _dims(match["k"], name)
        return TransformSpec(name, "whitening", k, 1.0, 0.0, drop_top=int(match["drop"]))
    if match := _SHRINK.match(name):
        k = _dims(match["k"], name)
        return TransformSpec(name, "whitening", k, 1.0, 1.0, shrinkage=float(match["eps"]))
    if match := _JL.match(name):
        k = _dims(match["k"], name)
        return TransformSpec(name, "jl", k, seed=int(match["seed"] or 0))
    if name == "full" or name.isdigit():
        return TransformSpec(name, "whitening", _dims(name, name))
    raise UsageError(f"unknown transform {name!r}; use {GRAMMAR}")


def fit_transform(
    spec: TransformSpec, fit_vectors: np.ndarray, moments: Moments | None = None
) -> Transform | None:
    """The fitted transform for `spec` (None for `none`; an artifact is loaded, not fitted).

    ``moments``: the statistics of ``fit_vectors`` when the caller has them, so a grid of
    eigendecomposition rows reads the vectors once.
    """
    if spec.method == "none":
        return None
    if spec.method == "flow":
        return Flow().fit(fit_vectors)
    if spec.method == "artifact":
        assert spec.path is not None
        return load_transform(spec.path)
    d = fit_vectors.shape[1]
    k = spec.n_components
    if spec.method == "jl":
        assert k is not None
        return RandomProjection(k, seed=spec.seed).fit_features(d, n_samples=len(fit_vectors))
    if (k or 1) + spec.drop_top > d:
        raise UsageError(
            f"transform {spec.name!r} keeps {k} dims after dropping the top {spec.drop_top} "
            f"but the vectors have {d}"
        )
    whitening = Whitening(
        k, beta=spec.beta, gamma=spec.gamma, drop_top=spec.drop_top, shrinkage=spec.shrinkage
    )
    if moments is None:
        return whitening.fit(fit_vectors)
    return whitening.fit_moments(moments)
