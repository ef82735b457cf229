"""`EmbeddingSpec`: the one name of a vector space.

Every vector baihua makes lives in a space fixed by the model's weights, the pooling, the token
limit, the query and passage prefixes, the backend and dtype that ran the transformer, and the
fitted transform (its digest and k). Everything that stores or reuses vectors — transform
artifacts, the index, job checkpoints, the eval vector cache — records this one object and checks
it with :func:`check_space` before it mixes old vectors with new ones.

Which fields must match (``SPACE_FIELDS``) and which only describe (``NOTE_FIELDS``):

- ``weights``, ``pooling``, ``max_length``, ``query_prefix``, ``passage_prefix``, ``backend``,
  ``dtype``, ``transform``, ``n_components`` change vectors, so a difference is an error. A dtype
  or backend difference counts: bf16 and fp32 vectors differ by up to 1e-2 in cosine, and full
  whitening amplifies that to points of STS.
- ``model`` (the name typed: preset, folder or hub id) and ``library_version`` cannot change a
  vector by themselves: the weights fingerprint names the model. A difference is logged and
  ignored — except in records older than the fingerprint, where the name is all there is and is
  compared.

The spec names both prefixes rather than one text type: an index stores passages and is searched
with queries, and both sides must come from the same space.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from baihua.core.errors import BaihuaError

logger = logging.getLogger(__name__)

SPACE_FIELDS = (
    "weights",
    "pooling",
    "max_length",
    "query_prefix",
    "passage_prefix",
    "backend",
    "dtype",
    "transform",
    "n_components",
)
NOTE_FIELDS = ("model", "library_version")


def library_version() -> str:
    """The installed baihua's version, or ``0+unknown`` when it runs uninstalled."""
    try:
        return importlib.metadata.version("baihua")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


class SpecError(BaihuaError, ValueError):
    """A recorded spec is unreadable (not a mapping, missing fields, wrong types)."""


class SpecMismatchError(BaihuaError, ValueError):
    """Vectors of two different spaces would be mixed; ``differences`` maps each differing field
    to (recorded, current)."""

    def __init__(self, what: str, differences: Mapping[str, tuple[Any, Any]], hint: str) -> None:
        self.what = what
        self.differences = dict(differences)
        listed = ", ".join(
            f"{name} {_show(old)} → {_show(new)}" for name, (old, new) in differences.items()
        )
        super().__init__(f"{what} was made in another vector space ({listed}); {hint}")


@dataclass(frozen=True)
class EmbeddingSpec:
    """The vector space of an encoder, optionally followed by a fitted transform.

    Parameters
    ----------
    model : the name the model was asked for (preset, folder or hub id).
    weights : fingerprint of the model's config, tokenizer and weight files.
    pooling, max_length : how token states become one vector, and the token limit.
    query_prefix, passage_prefix : what the encoder puts before queries and passages.
    backend, dtype : what ran the transformer (``torch``; ``float32`` or ``bfloat16``).
    transform : digest of the fitted transform applied after pooling; None for raw vectors.
    n_components : the transform's output dimension k; None for raw vectors.
    library_version : baihua's version that made the vectors (a note, never compared).
    """

    model: str
    weights: str
    pooling: str
    max_length: int
    query_prefix: str = ""
    passage_prefix: str = ""
    backend: str = "torch"
    dtype: str = "float32"
    transform: str | None = None
    n_components: int | None = None
    library_version: str = field(default_factory=library_version)

    def with_transform(self, digest: str | None, n_components: int | None) -> EmbeddingSpec:
        """This encoder space followed by a transform (None, None: the raw vectors)."""
        return dataclasses.replace(self, transform=digest, n_components=n_components)

    @property
    def raw(self) -> EmbeddingSpec:
        """The encoder's own space, before any transform."""
        return self.with_transform(None, None)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> EmbeddingSpec:
        """A spec from ``to_dict``'s output; SpecError names what is missing or malformed."""
        if not isinstance(data, Mapping):
            raise SpecError(f"a spec must be a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data and _required(f)]
        if missing:
            raise SpecError(f"spec lacks {', '.join(missing)}")
        spec = cls(**{k: v for k, v in data.items() if k in names})
        for name, kind in _TYPES.items():
            value = getattr(spec, name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise SpecError(f"spec field {name} has the wrong type: {value!r}")
        return spec

    def summary(self) -> str:
        """One line for logs: model, short fingerprints, pooling, limit, backend, transform."""
        transform = (
            "raw"
            if self.transform is None
            else f"transform {self.transform[:12]} k={self.n_components}"
        )
        return (
            f"model {self.model} (weights {self.weights[:12]}), pooling {self.pooling}, "
            f"max_length {self.max_length}, {self.backend}/{self.dtype}, {transform}"
        )


_TYPES: dict[str, type | tuple[type, ...]] = {
    "model": str,
    "weights": str,
    "pooling": str,
    "max_length": int,
    "query_prefix": str,
    "passage_prefix": str,
    "backend": str,
    "dtype": str,
    "transform": (str, type(None)),
    "n_components": (int, type(None)),
    "library_version": str,
}


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _show(value: object) -> str:
    # Fingerprints are 64 hex digits; 12 tell them apart in a message.
    if isinstance(value, str) and len(value) == 64:
        return repr(value[:12] + "…")
    return repr(value)


def check_space(
    recorded: EmbeddingSpec | Mapping[str, Any],
    current: EmbeddingSpec,
    *,
    what: str,
    hint: str,
    error: type[SpecMismatchError] = SpecMismatchError,
) -> None:
    """Raise SpecMismatchError unless ``recorded`` names the space of ``current``.

    ``recorded`` may be a partial mapping, from files written before specs existed: the fields it
    lacks are not checked (a warning says which), and without a weights fingerprint the model's
    name is compared instead. Differences in note fields are logged and let through.

    Parameters
    ----------
    what : names the record in messages, e.g. "index at data/index".
    hint : what the user can do about a mismatch, appended to the message.
    error : the SpecMismatchError subclass to raise.
    """
    old = recorded.to_dict() if isinstance(recorded, EmbeddingSpec) else dict(recorded)
    new = current.to_dict()
    compared = list(SPACE_FIELDS) if "weights" in old else ["model", *SPACE_FIELDS]
    differences = {
        name: (old[name], new[name]) for name in compared if name in old and old[name] != new[name]
    }
    if differences:
        raise error(what, differences, hint)
    unrecorded = [name for name in compared if name not in old]
    if unrecorded:
        logger.warning(
            "%s predates vector-space records: %s not recorded, so not checked",
            what,
            ", ".join(unrecorded),
        )
    notes = [
        f"{name} {_show(old[name])} → {_show(new[name])}"
        for name in NOTE_FIELDS
        if name not in compared and name in old and old[name] != new[name]
    ]
    if notes:
        logger.warning(
            "%s: %s differ, which cannot change vectors; going on", what, "; ".join(notes)
        )
