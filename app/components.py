"""Build the long-lived parts (encoder, pipeline) from settings: one place for CLI and server."""

from __future__ import annotations

from baihua.app.settings import Settings
from baihua.encoder import EmbeddingPipeline, Encoder, encoder_spec, resolve_model
from baihua.encoder.models import model_token_limit
from baihua.index import FaissStore, Store


def build_encoder(settings: Settings) -> Encoder:
    """Unset `max_length` is the model's own limit: the service reads whole documents."""
    spec = resolve_model(settings.model)
    return Encoder(
        spec,
        pooling=settings.pooling,
        max_length=settings.max_length or model_token_limit(spec, settings.cache_dir),
        batch_size=settings.batch_size,
        device=settings.device,
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
    """The persistent index in `<data_dir>/index` for `pipeline`'s vectors, created when
    missing; one built in another space is refused, naming the fields that differ."""
    return FaissStore.open(
        settings.data_dir / "index",
        dim=pipeline.dim,
        factory=settings.index_factory,
        spec=pipeline.spec,
    )
