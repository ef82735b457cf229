"""Build the long-lived parts (encoder, pipeline) from settings: one place for CLI and server."""

from __future__ import annotations

from baihua.app.settings import Settings
from baihua.core.errors import UsageError
from baihua.encoder import EmbeddingPipeline, Encoder, encoder_spec
from baihua.index import FaissStore, Store


def build_encoder(settings: Settings) -> Encoder:
    return Encoder(
        settings.model,
        pooling=settings.pooling,
        max_length=settings.max_length,
        batch_size=settings.batch_size,
        max_batch_tokens=settings.max_batch_tokens,
        device=settings.device,
        backend=settings.backend,
        dtype=settings.dtype,
        num_threads=settings.num_threads,
        cache_dir=settings.cache_dir,
    )


def build_pipeline(settings: Settings) -> EmbeddingPipeline:
    """The encoder plus the configured transform artifact, checked against each other (the
    artifact first, so a bad path fails before the model loads)."""
    from baihua.whitening import check_compatible, load_transform

    transform = load_transform(settings.whitening) if settings.whitening else None
    encoder = build_encoder(settings)
    if transform is not None:
        check_compatible(transform.metadata, encoder_spec(encoder), path=settings.whitening)
    return EmbeddingPipeline(encoder, transform)


def open_store(settings: Settings, pipeline: EmbeddingPipeline) -> Store:
    """The persistent index for `pipeline`'s vectors, created when missing: FAISS in
    `<data_dir>/index`, or the Milvus collection of `milvus_uri`. One built in another space is
    refused, naming the fields that differ."""
    if settings.index_backend == "milvus":
        try:
            from baihua.index.milvus_store import MilvusStore
        except ImportError as error:
            raise UsageError(
                f"index_backend=milvus needs pymilvus ({error}); pip install 'baihua[milvus]'"
            ) from None

        return MilvusStore(
            settings.milvus_location,
            pipeline.dim,
            collection=settings.milvus_collection,
            index_type=settings.milvus_index_type,
            index_params=settings.milvus_index_params,
            search_params=settings.milvus_search_params,
            token=settings.milvus_token or "",
            spec=pipeline.spec,
        )
    return FaissStore.open(
        settings.data_dir / "index",
        dim=pipeline.dim,
        factory=settings.index_factory,
        spec=pipeline.spec,
    )
