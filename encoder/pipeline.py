"""Encode → transform → normalise: the one composition that the service, eval and bench share.

It lives in `encoder` so every consumer can import it; the transform is any object of the shape
`core.transform.VectorTransform` (a fitted `whitening.Whitening` or `Flow`), so `encoder` never
imports `whitening`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from baihua.core.progress import Progress
from baihua.core.spec import EmbeddingSpec
from baihua.core.transform import VectorTransform
from baihua.encoder.encoder import Encoder, TextType, TruncationSide


def encoder_spec(
    encoder: Encoder, *, pooling: str | None = None, max_length: int | None = None
) -> EmbeddingSpec:
    """The space of `encoder`'s raw vectors, with another pooling or token limit if given."""
    return EmbeddingSpec(
        model=encoder.name,
        weights=encoder.fingerprint,
        pooling=pooling or encoder.pooling,
        max_length=max_length or encoder.max_length,
        query_prefix=encoder.spec.query_prefix,
        passage_prefix=encoder.spec.passage_prefix,
        backend=encoder.backend,
        dtype=encoder.dtype,
    )


@dataclass
class Embedded:
    vectors: np.ndarray
    truncated: np.ndarray
    n_tokens: np.ndarray


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class EmbeddingPipeline:
    """An encoder, an optional fitted transform checked against it, and L2 normalisation."""

    def __init__(self, encoder: Encoder, transform: VectorTransform | None = None) -> None:
        if transform is not None:
            transform.check_compatible(encoder_spec(encoder))
        self.encoder = encoder
        self.transform = transform

    @functools.cached_property
    def spec(self) -> EmbeddingSpec:
        """The space of the vectors `embed` returns with `whiten=True`."""
        raw = encoder_spec(self.encoder)
        if self.transform is None:
            return raw
        return raw.with_transform(self.transform.digest(), self.transform.n_components_)

    @property
    def dim(self) -> int:
        """Dimension of the vectors `embed` returns with `whiten=True`."""
        return self.transform.n_components_ if self.transform is not None else self.encoder.dim

    def check_dimensions(self, dimensions: int | None, *, whiten: bool = True) -> None:
        """ValueError unless `dimensions` is None or between 1 and the output dimension."""
        available = self.dim if whiten else self.encoder.dim
        if dimensions is not None and not 1 <= dimensions <= available:
            raise ValueError(
                f"dimensions must be between 1 and {available} (the vectors' dimension), "
                f"got {dimensions}"
            )

    def embed(
        self,
        texts: Sequence[str],
        *,
        text_type: TextType = "query",
        whiten: bool = True,
        normalize: bool = True,
        dimensions: int | None = None,
        truncation_side: TruncationSide = "right",
        progress: Progress | None = None,
    ) -> Embedded:
        """Vectors of `texts`; `dimensions` keeps the first components (before normalising);
        a text over the token limit loses its end, or its start with ``truncation_side="left"``.

        Whitening orders its components by variance, so its first k columns are exactly the
        transform a fit with ``n_components=k`` gives: one full-rank artifact serves every k.
        """
        self.check_dimensions(dimensions, whiten=whiten)
        encoded = self.encoder.encode_poolings(
            texts,
            [self.encoder.pooling],
            text_type=text_type,
            truncation_side=truncation_side,
            progress=progress,
        )
        vectors = encoded.vectors[self.encoder.pooling]
        if whiten and self.transform is not None:
            vectors = self.transform.transform(vectors)
        if dimensions is not None:
            vectors = np.ascontiguousarray(vectors[:, :dimensions])
        if normalize:
            vectors = l2_normalize(vectors)
        return Embedded(vectors.astype(np.float32, copy=False), encoded.truncated, encoded.n_tokens)
