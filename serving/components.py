"""Build the long-lived parts (encoder, pipeline) from settings: one place for CLI and server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from baihua.core.errors import BaihuaError, UsageError
from baihua.core.spec import EmbeddingSpec
from baihua.encoder import EmbeddingPipeline, Encoder, encoder_spec, resolve_model
from baihua.encoder.models import model_token_limit
from baihua.index import FaissStore, Store, StoreSettingError
from baihua.index.segment import Segmenter
from baihua.index.sparse import SparseIndex
from baihua.serving.settings import Settings, SettingsError
from baihua.serving.storage import storage_errors

# FaissStore's arguments -> the settings that give them
_FAISS_SETTINGS = {"factory": "index_factory", "search_params": "index_search_params"}


def recorded_max_length(settings: Settings, *, index: bool = True) -> tuple[int, str] | None:
    """The token limit the served vector space was built at, and what records it: the
    whitening artifact (its fit), else (with ``index``) the FAISS index's database. A fit or an
    index made at 64 tokens is another space than at 512. None when neither records one (the
    Milvus collection's record is checked when the store opens)."""
    from baihua.index.database import read_meta
    from baihua.index.faiss_store import DATABASE
    from baihua.whitening import read_metadata

    if settings.whitening is not None:
        fitted = read_metadata(settings.whitening).spec.get("max_length")
        if fitted is not None:
            return int(fitted), f"the whitening artifact {settings.whitening} was fitted at it"
    database = settings.data_dir / "index" / DATABASE
    if index and settings.index_backend == "faiss" and database.is_file():
        with storage_errors(database.parent, "open"):
            recorded = read_meta(database).get("spec")
        if recorded is not None and json.loads(recorded).get("max_length") is not None:
            length = int(json.loads(recorded)["max_length"])
            return length, f"the index in {database.parent} was built at it"
    return None


def resolve_max_length(settings: Settings, *, index: bool = True) -> tuple[Settings, str]:
    """`settings` with the token limit to embed at, and why: `max_length` when set (a recorded
    space that differs is then refused when the artifact or index is checked); else the
    recorded one (``recorded_max_length``); else the model's own limit."""
    if settings.max_length is not None:
        return settings, "set by max_length"
    recorded = recorded_max_length(settings, index=index)
    if recorded is None:
        limit = model_token_limit(resolve_model(settings.model), settings.cache_dir)
        recorded = limit, "the model's own limit; max_length is not set"
    length, why = recorded
    return settings.model_copy(update={"max_length": length}), why


def build_encoder(settings: Settings) -> Encoder:
    """Unset `max_length` is the model's own limit: the service reads whole documents."""
    spec = resolve_model(settings.model)
    return Encoder(
        spec,
        pooling=settings.pooling,
        max_length=settings.max_length or model_token_limit(spec, settings.cache_dir),
        batch_size=settings.batch_size,
        max_batch_tokens=settings.max_batch_tokens,
        device=settings.device,
        backend=settings.backend,
        dtype=settings.dtype,
        num_threads=settings.num_threads,
        streams=settings.streams,
        cache_dir=settings.cache_dir,
    )


def build_pipeline(settings: Settings) -> EmbeddingPipeline:
    """The encoder (see `build_encoder`) plus the configured transform artifact, checked against
    each other (the artifact first, so a bad path fails before the model loads)."""
    from baihua.whitening import check_compatible, load_transform

    transform = load_transform(settings.whitening) if settings.whitening else None
    encoder = build_encoder(settings)
    if transform is not None:
        check_compatible(transform.metadata, encoder_spec(encoder), path=settings.whitening)
    return EmbeddingPipeline(encoder, transform)


def open_sparse(settings: Settings, store: Store) -> SparseIndex | None:
    """The BM25 index beside a FAISS store, in `<data_dir>/sparse`: loaded when it holds
    exactly the store's documents, rebuilt from their texts otherwise (see index/sparse.py); in
    memory beside a store in memory.
    None on Milvus (its lite engine's BM25 is unreliable) or when `sparse_index` is off."""
    if settings.index_backend != "faiss" or not settings.sparse_index:
        return None
    if not store.persistent:
        index = SparseIndex(Segmenter())
        index.rebuild(stored_texts(store))
        return index
    return SparseIndex.open(
        settings.data_dir / "sparse", Segmenter(), documents=lambda: stored_texts(store)
    )


def stored_texts(store: Store, page: int = 1000) -> Iterator[tuple[int, str]]:
    """Every stored (id, text), in id order."""
    after = -1
    while documents := store.scan(after, page):
        yield from ((d.id, d.text) for d in documents)
        after = documents[-1].id


def open_store(settings: Settings, pipeline: EmbeddingPipeline) -> Store:
    """The persistent index for `pipeline`'s vectors, created when missing: FAISS in
    `<data_dir>/index`, or the Milvus collection of `milvus_uri`. One built in another space is
    refused, naming the fields that differ. A data directory that cannot be written
    (read-only, full, gone) raises a ``StorageError`` naming it."""
    with storage_errors(local_store_directory(settings), "open"):
        if settings.index_backend == "milvus":
            return open_milvus_store(settings, pipeline.dim, pipeline.spec)
        try:
            return FaissStore.open(
                settings.data_dir / "index",
                dim=pipeline.dim,
                factory=settings.index_factory,
                search_params=settings.index_search_params,
                spec=pipeline.spec,
            )
        except StoreSettingError as error:
            raise faiss_setting_error(error) from None


def faiss_setting_error(error: StoreSettingError) -> BaihuaError:
    """A FAISS store's refusal of its factory or search params, naming the setting that gave
    them (the store knows them by its own argument names); other refusals as they are."""
    setting = _FAISS_SETTINGS.get(error.setting)
    if setting is None:
        return error
    return SettingsError(f"{setting} (BAIHUA_{setting.upper()}): {error}")


def local_store_directory(settings: Settings) -> Path | None:
    """The local directory the settings' store keeps its files in: `<data_dir>/index`, or the
    folder of the embedded Milvus engine's file; None for a Milvus server."""
    if settings.index_backend == "milvus":
        location = settings.milvus_location
        return None if "://" in location else Path(location).parent
    return settings.data_dir / "index"


def store_directory(settings: Settings, store: Store) -> Path | None:
    """Where `store` keeps its files: its own path (a FAISS store handed in), else the
    settings' directory when the store is theirs; None for a store in memory or on a server."""
    path = getattr(store, "path", None)
    if isinstance(store, FaissStore):
        return None if path is None else Path(path)
    directory = local_store_directory(settings)
    return directory if directory is not None and directory.is_dir() else None


def open_milvus_store(
    settings: Settings, dim: int, spec: EmbeddingSpec | None, *, uri: str | None = None
) -> Store:
    """The Milvus collection the settings name, at `uri` (another address of the same engine,
    such as the one Ray workers reach) or else at `settings.milvus_location`."""
    try:
        from baihua.index.milvus_store import MilvusStore
    except ImportError as error:
        raise UsageError(
            f"index_backend=milvus needs pymilvus ({error}); pip install 'baihua[milvus]'"
        ) from None

    return MilvusStore(
        uri or settings.milvus_location,
        dim,
        collection=settings.milvus_collection,
        index_type=settings.milvus_index_type,
        index_params=settings.milvus_index_params,
        search_params=settings.milvus_search_params,
        token=settings.milvus_token or "",
        spec=spec,
    )
