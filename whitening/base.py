"""The base every fitted transform shares: scikit-learn's estimator API and checked loading.

A transform (Whitening, Flow, a random projection, …) stores its hyperparameters as given in
``__init__``, learns in ``_fit`` and names what it learned with a trailing underscore; this base
gives it ``fit(X, y=None)``, ``fit_transform``, ``get_params``/``set_params`` (so
``sklearn.base.clone`` and grid searches work), input checks, and ``from_pretrained`` that
refuses an artifact of another method or with tensors of the wrong shapes. scikit-learn itself is
not needed at run time.
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from baihua.core.errors import UsageError
from baihua.whitening.artifact import (
    ArtifactError,
    LoadableTransform,
    TransformMetadata,
    load_artifact,
)
from baihua.whitening.moments import check_array


def is_integer(value: Any) -> bool:
    """An integer hyperparameter: any integral number but a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def require_integer(
    name: str, value: Any, low: int, high: int | None = None, note: str = ""
) -> None:
    """UsageError unless ``value`` is an integer from ``low`` to ``high`` (no upper bound when
    None); ``note`` says more of the range."""
    if not is_integer(value) or value < low or (high is not None and value > high):
        span = f">= {low}" if high is None else f"between {low} and {high}"
        raise UsageError(f"{name} must be an integer {span}{note}, got {value!r}")


def require_finite(name: str, value: Any, what: str = "a finite number") -> None:
    """UsageError unless ``value`` is a finite real number."""
    if not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise UsageError(f"{name} must be {what}, got {value!r}")


class NotFittedError(ValueError, AttributeError):
    """A transform was used before it was fitted (mirrors scikit-learn's, without needing it)."""


class TransformBase(LoadableTransform):
    """Base of the fitted transforms; a subclass sets ``method`` and implements ``_fit``,
    ``transform``, ``_artifact_contents``, ``_expected_shapes`` and ``_from_artifact``."""

    method: ClassVar[str]
    """The artifact's ``method`` field: how ``load_transform`` finds the class."""

    n_features_in_: int

    # ------------------------------------------------------------------ parameters

    @classmethod
    def _get_param_names(cls) -> list[str]:
        """``__init__``'s parameters, which are the hyperparameters (scikit-learn's rule)."""
        signature = inspect.signature(cls.__init__)
        names = []
        for name, parameter in signature.parameters.items():
            if name == "self":
                continue
            assert parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD), (
                f"{cls.__name__}.__init__ must name every hyperparameter (no *args/**kwargs)"
            )
            names.append(name)
        return sorted(names)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The hyperparameters as passed to ``__init__`` (``deep`` is accepted for
        scikit-learn; these transforms hold no sub-estimators)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> Self:
        """Set hyperparameters by name; they take effect at the next ``fit``."""
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise UsageError(
                    f"invalid parameter {name!r} for {type(self).__name__}; "
                    f"valid parameters: {', '.join(valid)}"
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {
            name: parameter.default
            for name, parameter in inspect.signature(type(self).__init__).parameters.items()
        }
        changed = [
            f"{name}={value!r}"
            for name, value in self.get_params().items()
            if not _same(value, defaults.get(name, inspect.Parameter.empty))
        ]
        return f"{type(self).__name__}({', '.join(changed)})"

    # ------------------------------------------------------------------ fitting

    def check_params(self, n_features: int | None = None) -> None:
        """Raise UsageError for hyperparameters that cannot work, before any data is seen
        (``fit`` checks them too, against the input width ``n_features``); a subclass with
        constraints overrides it."""

    def fit(self, X: Any, y: Any = None) -> Self:
        """Fit on ``X`` of shape (n_samples, n_features), forgetting earlier fits; ``y`` is
        ignored (these transforms are unsupervised)."""
        return self._fit(check_array(X))

    def _fit(self, X: np.ndarray) -> Self:
        raise NotImplementedError

    def transform(self, X: Any) -> np.ndarray:
        raise NotImplementedError

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit on ``X`` and return it transformed."""
        return self.fit(X).transform(X)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "n_features_in_")

    def __sklearn_tags__(self) -> Any:
        """Tags for scikit-learn's estimator checks; imported only when scikit-learn asks."""
        from sklearn.utils import Tags, TargetTags, TransformerTags

        return Tags(
            estimator_type=None,
            target_tags=TargetTags(required=False),
            transformer_tags=TransformerTags(preserves_dtype=["float32"]),
        )

    def _check_is_fitted(self, method: str) -> None:
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call fit before {method}"
            )

    def _check_input(self, X: Any, method: str, name: str = "X") -> np.ndarray:
        """``X`` checked for a fitted transform: a finite 2-D array of the fitted width."""
        self._check_is_fitted(method)
        X = check_array(X, name=name)
        if X.shape[1] != self.n_features_in_:
            raise UsageError(
                f"{name} has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input (the width it was fitted on)"
            )
        return X

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], **options: Any) -> Self:
        """Load a transform saved by ``save_pretrained``; sets ``.metadata``.

        The artifact must hold this class's method and exactly the tensors, of the shapes, that
        its metadata implies; anything else is an ``ArtifactError`` naming what is wrong.
        """
        path = Path(path)
        tensors, metadata = load_artifact(path)
        if metadata.method != cls.method:
            raise ArtifactError(
                f"{path} holds a {metadata.method!r} transform, not {cls.method}; "
                "load it with load_transform"
            )
        try:
            expected = cls._expected_shapes(metadata)
        except ValueError as error:
            raise ArtifactError(f"{path}: {error}; the artifact is corrupt, fit it again") from None
        for name in sorted(expected.keys() | tensors.keys()):
            shape = expected.get(name, "nothing")
            found = tensors[name].shape if name in tensors else "nothing"
            if found != shape:
                raise ArtifactError(
                    f"{path}: tensor {name!r} should have shape {shape} but has {found}; "
                    "the artifact is corrupt, fit it again"
                )
        transform = cls._from_artifact(tensors, metadata, **options)
        transform.metadata = metadata
        return transform

    @classmethod
    def _expected_shapes(cls, metadata: TransformMetadata) -> dict[str, tuple[int, ...]]:
        """Every tensor an artifact with this metadata holds, and its shape; a ValueError when
        the metadata itself is inconsistent."""
        raise NotImplementedError

    @classmethod
    def _from_artifact(
        cls, tensors: dict[str, np.ndarray], metadata: TransformMetadata, **options: Any
    ) -> Self:
        """The fitted transform from tensors whose names and shapes were checked."""
        raise NotImplementedError


def _same(value: Any, default: Any) -> bool:
    try:
        return bool(value is default or value == default)
    except ValueError:  # arrays compare elementwise
        return False
