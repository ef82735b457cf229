"""The transform grammar of `baihua eval --whitening`: none, full, N, rot-N, b0.5g0.5-N, flow."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from baihua.core.errors import UsageError
from baihua.whitening import Flow, Whitening, load_transform
from baihua.whitening.artifact import read_metadata

Method = Literal["none", "whitening", "flow", "artifact"]
_CUSTOM = re.compile(r"^b(?P<beta>\d+(?:\.\d+)?)g(?P<gamma>\d+(?:\.\d+)?)-(?P<k>\d+|full)$")


@dataclass(frozen=True)
class TransformSpec:
    """`full` whitens without truncation, `N` whitens to N dims, `rot-N` is β = γ = 0 (rotation
    plus truncation), `b<β>g<γ>-<N|full>` any of Su's generalisations."""

    name: str
    method: Method
    n_components: int | None = None
    beta: float = 1.0
    gamma: float = 1.0
    path: Path | None = None  # method "artifact": a transform fitted earlier, used as it is


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
        k = _dims(match["k"], name)
        return TransformSpec(name, "whitening", k, float(match["beta"]), float(match["gamma"]))
    if name == "full" or name.isdigit():
        return TransformSpec(name, "whitening", _dims(name, name))
    raise UsageError(
        f"unknown transform {name!r}; use none, full, N, rot-N, rot-full, b<β>g<γ>-<N|full> or flow"
    )


def fit_transform(spec: TransformSpec, fit_vectors: np.ndarray) -> Whitening | Flow | None:
    """The fitted transform for `spec` (None for `none`; an artifact is loaded, not fitted)."""
    if spec.method == "none":
        return None
    if spec.method == "flow":
        return Flow().fit(fit_vectors)
    if spec.method == "artifact":
        assert spec.path is not None
        return load_transform(spec.path)  # type: ignore[return-value]
    k = spec.n_components
    if k is not None and k > fit_vectors.shape[1]:
        raise UsageError(
            f"transform {spec.name!r} keeps {k} dims but the vectors have {fit_vectors.shape[1]}"
        )
    return Whitening(k, beta=spec.beta, gamma=spec.gamma).fit(fit_vectors)
