"""What every fitted transform offers the code that applies it: encoder's pipeline applies one,
whitening's estimators are ones, and neither package imports the other."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from baihua.core.spec import EmbeddingSpec


class VectorTransform(Protocol):
    n_components_: int

    def transform(self, X: Any) -> np.ndarray: ...

    def digest(self) -> str: ...

    def check_compatible(self, spec: EmbeddingSpec) -> None: ...
