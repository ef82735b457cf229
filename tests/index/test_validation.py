"""Bad input to a store raises a ValueError that names the problem."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from baihua.index import FaissStore


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.add([1], np.ones((1, 5)), ["t"]), r"shape \(n, 4\)"),
        (lambda s: s.add([1], np.ones(4), ["t"]), r"v\[None, :\]"),
        (lambda s: s.add([1], np.full((1, 4), np.nan), ["t"]), "NaN"),
        (lambda s: s.add([-1], np.ones((1, 4)), ["t"]), r"\[0, 2\*\*63 - 1\]"),
        (lambda s: s.add([1.5], np.ones((1, 4)), ["t"]), "integers"),
        (lambda s: s.add([1, 2], np.ones((2, 4)), ["t"]), "2 ids but 1 texts"),
        (lambda s: s.add([1], np.ones((1, 4)), ["t"], [{"x": {1, 2}}]), "JSON"),
        (lambda s: s.search(np.ones((1, 4)), 0), "top_k"),
        (lambda s: s.search(np.ones((1, 3)), 1), r"queries must have shape"),
        (lambda s: s.search(np.array([[np.inf, 0, 0, 0]]), 1), "infinity"),
        (lambda s: s.delete([[1]]), "1-D"),
        (lambda s: s.get(-3), "id must be"),
        (lambda s: s.get(True), "id must be an integer"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(FaissStore(4))
