"""`baihua fit`: a whitening, BERT-flow or random projection artifact, fitted offline."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

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
    TextTypeOpt,
    check_method,
    check_text_type,
    load_settings,
    progress_bar,
    ray_options,
    user_errors,
)
from baihua.core.errors import UsageError

if TYPE_CHECKING:
    from baihua.whitening import Flow, Whitening


@user_errors
def fit(
    out: Annotated[Path, typer.Option(help="Artifact folder to write.")],
    input: Annotated[
        Path | None,
        typer.Option("--input", help="Corpus: lines, TSV pairs or JSONL (jl reads none)."),
    ] = None,
    model: ModelOpt = None,
    pooling: PoolingOpt = None,
    max_length: MaxLengthOpt = None,
    method: Annotated[
        str,
        typer.Option(help="whitening, flow (BERT-flow) or jl (seeded Gaussian projection)."),
    ] = "whitening",
    n_components: Annotated[
        int | None, typer.Option(help="Dimensions kept (k); default all.")
    ] = None,
    beta: Annotated[float, typer.Option(help="Su's β: how much of the mean to remove.")] = 1.0,
    gamma: Annotated[float, typer.Option(help="Su's γ: 1 whitens, 0 only rotates.")] = 1.0,
    cap_n_components: Annotated[
        bool,
        typer.Option(
            help="Keep the covariance's rank when --n-components exceeds it, instead of refusing."
        ),
    ] = False,
    text_type: TextTypeOpt = "query",
    seed: Annotated[int, typer.Option(help="jl: seed of the random matrix.")] = 0,
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
    """Fit whitening (or BERT-flow) offline over a corpus (blank lines are skipped); resumable
    after a crash or Ctrl-C (with --engine local). `--method jl` draws the Johnson–Lindenstrauss
    baseline instead, from no corpus."""
    from baihua.encoder.corpus import count_sentences
    from baihua.jobs.fit import FitJob, check_fit, fit_projection
    from baihua.serving.components import build_encoder

    settings = load_settings(
        config,
        model=model,
        pooling=pooling,
        max_length=max_length,
        batch_size=batch_size,
        backend=backend,
        dtype=dtype,
    )
    if method == "jl":
        if input is not None:
            raise UsageError("--method jl reads no corpus (the projection is random); drop --input")
        projection = fit_projection(out, settings, n_components, seed)
        typer.echo(
            f"wrote {out}: jl, {projection.n_features_in_} → {projection.n_components_} dims, "
            f"seed {seed}",
            err=True,
        )
        return
    if input is None:
        raise UsageError(f"--method {method} fits on a corpus: pass --input")
    ray = ray_options(engine, ray_address, ray_actors, ray_threads, ray_block_size)
    total = count_sentences(input)  # a bad line fails here, before the model loads
    kind, fit_method = check_text_type(text_type), check_method(method)
    options: dict[str, Any] = {
        "method": fit_method,
        "n_components": n_components,
        "beta": beta,
        "gamma": gamma,
        "cap_n_components": cap_n_components,
    }
    check_fit(input, out, total, **options)  # so do bad paths and options
    job = FitJob(input, out, build_encoder(settings), text_type=kind, **options)
    done = job.plan(total)
    if ray is not None:
        from baihua.jobs.ray import ray_fit

        with progress_bar("fit (ray)", total) as bar:
            transform: Whitening | Flow = ray_fit(job, settings, total, ray, bar.update)
    else:
        if done:
            typer.echo(f"resuming from checkpoint: {done}/{total} sentences done", err=True)
        with progress_bar("fit", total, done) as bar:
            transform = job.run(progress=bar.update)
    typer.echo(
        f"wrote {out}: {method}, {transform.n_features_in_} → {transform.n_components_} dims "
        f"from {transform.n_samples_seen_} sentences",
        err=True,
    )
