"""The random projection baseline (`fit_projection`): drawn for the model's dimension, saved in
the model's space, its options checked before the model loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from baihua.core.errors import UsageError
from baihua.encoder import Encoder, encoder_spec
from baihua.jobs.fit import fit_projection
from baihua.serving.settings import Settings
from baihua.whitening import load_transform
from baihua.whitening.projection import gaussian_matrix

NO_MODEL = "/nonexistent/model"  # loading it would fail: an error about anything else came first


def test_the_projection_is_drawn_for_the_models_dimension_and_saved_in_its_space(
    tiny_bert: Path, tmp_path: Path
) -> None:
    settings = Settings(model=str(tiny_bert), pooling="last-avg", max_length=32)
    out = tmp_path / "jl8"

    projection = fit_projection(out, settings, 8, seed=3)

    saved = load_transform(out)
    encoder = Encoder(str(tiny_bert), pooling="last-avg", max_length=32)
    assert saved.metadata.method == "jl" and saved.n_features_in_ == encoder.dim == 32
    saved.check_compatible(encoder_spec(encoder))
    np.testing.assert_array_equal(saved.components_, projection.components_)
    np.testing.assert_array_equal(projection.components_, gaussian_matrix(32, 8, 3))


@pytest.mark.parametrize(
    ("n_components", "seed", "message"),
    [
        (None, 0, "--method jl needs --n-components"),
        (0, 0, "n_components must be an integer >= 1"),
        (8, -1, "seed must be an integer >= 0"),
    ],
)
def test_bad_options_are_refused_before_the_model_loads(
    tmp_path: Path, n_components: int | None, seed: int, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        fit_projection(tmp_path / "jl", Settings(model=NO_MODEL), n_components, seed)
    assert not (tmp_path / "jl").exists()
