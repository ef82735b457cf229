"""`baihua index build` and `baihua index reembed`: the service's index, built offline."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from baihua.encoder import EmbeddingPipeline
    from baihua.index import Store
    from baihua.serving.settings import Settings

from baihua.cli.common import (
    BackendOpt,
    BatchSizeOpt,
    ConfigOpt,
    DtypeOpt,
    EngineOpt,
    MaxLengthOpt,
    ModelOpt,
    PoolingOpt,
    RayActorsOpt,
    RayAddressOpt,
    RayBlockSizeOpt,
    RayThreadsOpt,
    load_settings,
    progress_bar,
    ray_options,
    user_errors,
)

index_cli = typer.Typer(help="Build the service's index offline.", no_args_is_help=True)

DataDirOpt = Annotated[
    Path | None, typer.Option(help="The service's data folder (default ./data).")
]
WhiteningOpt = Annotated[Path | None, typer.Option(help="Fitted transform folder.")]


@index_cli.command("build")
@user_errors
def index_build(
    input: Annotated[Path, typer.Option("--input", help="Corpus: lines, TSV pairs or JSONL.")],
    data_dir: DataDirOpt = None,
    model: ModelOpt = None,
    whitening: WhiteningOpt = None,
    batch_size: BatchSizeOpt = None,
    backend: BackendOpt = None,
    dtype: DtypeOpt = None,
    config: ConfigOpt = None,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    ray_actors: RayActorsOpt = None,
    ray_threads: RayThreadsOpt = None,
    ray_block_size: RayBlockSizeOpt = None,
) -> None:
    """Embed a corpus as passages into the index; rerun to resume. JSONL may give `id` and
    `payload`; other corpora get their sentence position as id. With --engine ray and the
    Milvus backend the Ray workers write to Milvus."""
    from baihua.encoder.corpus import count_sentences
    from baihua.jobs.index_build import IndexBuildJob
    from baihua.serving.components import (
        build_pipeline,
        local_store_directory,
        resolve_max_length,
    )
    from baihua.serving.storage import storage_errors

    options = ray_options(engine, ray_address, ray_actors, ray_threads, ray_block_size)
    total = count_sentences(input)
    settings = load_settings(
        config,
        data_dir=data_dir,
        model=model,
        whitening=whitening,
        batch_size=batch_size,
        backend=backend,
        dtype=dtype,
    )
    settings, _ = resolve_max_length(settings)
    pipeline = build_pipeline(settings)
    index_dir = settings.data_dir / "index"
    with (
        open_held_store(settings, pipeline) as store,
        storage_errors(local_store_directory(settings), "build"),
    ):
        if options is not None:
            from baihua.jobs.ray import ray_index_build, ray_session, worker_store_uri

            worker_uri = worker_store_uri(settings, store)
            with ray_session(options), progress_bar("index (ray)", total) as bar:
                ray_index_build(
                    store, settings, input, total, options, worker_uri=worker_uri,
                    progress=bar.update,
                )  # fmt: skip
            typer.echo(f"{index_dir}: {len(store)} documents", err=True)
            return
        job = IndexBuildJob(input, store, pipeline, index_dir / "build-progress.json")
        done = job.done()
        if done:
            typer.echo(f"resuming: {done}/{total} documents already indexed", err=True)
        with progress_bar("index", total, done) as bar:
            job.run(progress=bar.update)
        typer.echo(f"{index_dir}: {len(store)} documents", err=True)


def open_held_store(settings: Settings, pipeline: EmbeddingPipeline) -> Store:
    """`open_store`, saying what to do when a running server holds the index."""
    from baihua.index import StoreLockedError
    from baihua.serving.components import open_store

    try:
        return open_store(settings, pipeline)
    except StoreLockedError as error:
        raise StoreLockedError(
            error.path,
            f"the index at {error.path} is open in another process (a running `baihua serve`?); "
            "stop the server and rerun, or add the documents through the server: "
            "POST /documents",
        ) from None


@index_cli.command("reembed")
@user_errors
def index_reembed(
    data_dir: DataDirOpt = None,
    model: ModelOpt = None,
    whitening: WhiteningOpt = None,
    pooling: PoolingOpt = None,
    max_length: MaxLengthOpt = None,
    batch_size: BatchSizeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Re-encode the index's stored documents in another space (model, whitening, pooling) and
    switch to it atomically; rerun to resume. The old index keeps serving until the switch and
    is kept in <data-dir>/index.previous."""
    from baihua.index import StoreSettingError
    from baihua.jobs.reembed import ReembedJob
    from baihua.serving.components import build_pipeline, faiss_setting_error, resolve_max_length

    settings = load_settings(
        config,
        data_dir=data_dir,
        model=model,
        whitening=whitening,
        pooling=pooling,
        max_length=max_length,
        batch_size=batch_size,
    )
    settings, _ = resolve_max_length(settings, index=False)  # the new space: not the index's
    try:
        job = ReembedJob(
            settings.data_dir,
            build_pipeline(settings),
            factory=settings.index_factory,
            search_params=settings.index_search_params,
        )
    except StoreSettingError as error:
        raise faiss_setting_error(error) from None
    total, done = job.total(), job.done()
    if done:
        typer.echo(f"resuming: {done}/{total} documents already re-embedded", err=True)
    with progress_bar("reembed", total, done) as bar:
        count = job.run(progress=bar.update)
    typer.echo(
        f"{job.source}: {count} documents, now {job.pipeline.spec.summary()}; the old index is "
        f"in {job.previous}",
        err=True,
    )
