"""`baihua plot …`: pictures of what whitening does, as PNG and SVG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from baihua.cli.common import (
    ConfigOpt,
    PoolingOpt,
    load_settings,
    progress_bar,
    split_list,
    user_errors,
)
from baihua.cli.evaluate import CacheDirOpt, StsMaxLengthOpt, vector_cache
from baihua.core.errors import UsageError

plot_cli = typer.Typer(
    help="Pictures of what whitening does, as PNG and SVG (OUT.png, OUT.svg).",
    no_args_is_help=True,
)

PlotOutOpt = Annotated[Path, typer.Option(help="Writes OUT.png and OUT.svg.")]


def wrote(paths: list[Path]) -> None:
    typer.echo(f"wrote {', '.join(str(p) for p in paths)}", err=True)


@plot_cli.command("anisotropy")
@user_errors
def plot_anisotropy(
    data_dir: Annotated[Path, typer.Option(help="Folder of STS task folders.")],
    out: PlotOutOpt,
    task: Annotated[str, typer.Option(help="The task whose pairs are drawn.")] = "STS-B",
    model: Annotated[str, typer.Option(help="Preset, local folder or hub id.")] = "me5-small",
    pooling: PoolingOpt = None,
    whitening: Annotated[
        str, typer.Option(help="Transforms beside raw, as in `baihua eval`: full, N, rot-N, …")
    ] = "full,rot-128",
    split: Annotated[str, typer.Option(help="The split whose pairs are drawn.")] = "test",
    fit_on: Annotated[str, typer.Option(help="task (every split, as the paper) or test.")] = "task",
    max_length: StsMaxLengthOpt = None,
    cache_dir: CacheDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Cosine histograms of random, paraphrase and non-paraphrase pairs, raw and transformed;
    prints their means and the paraphrase/non-paraphrase separation (ROC AUC)."""
    from baihua.eval.anisotropy import anisotropy, summary_table
    from baihua.eval.plots import anisotropy_figure, save
    from baihua.eval.transforms import parse_transform
    from baihua.serving.components import build_encoder

    if fit_on not in ("task", "test"):
        raise UsageError(f"--fit-on must be task or test, got {fit_on!r}")
    transforms = [parse_transform(name) for name in split_list(whitening)]
    settings = load_settings(config, model=model, pooling=pooling, cache_dir=cache_dir)
    encoder = build_encoder(settings)
    with progress_bar(f"encode {model}") as bar:
        results = anisotropy(
            encoder,
            data_dir=data_dir,
            task=task,
            transforms=transforms,
            cache_dir=vector_cache(settings),
            split=split,
            fit_on=fit_on,
            max_length=max_length,
            progress=bar.update,
        )
    title = f"{encoder.name} {encoder.pooling}: cosines of {task} {split} pairs"
    typer.echo(summary_table(results))
    wrote(save(anisotropy_figure(results, title), out))


@plot_cli.command("k-sweep")
@user_errors
def plot_k_sweep(
    input: Annotated[Path, typer.Option("--input", help="JSON from `baihua eval --output`.")],
    out: PlotOutOpt,
    pooling: Annotated[
        str | None, typer.Option(help="Poolings to draw, comma-separated (default: all).")
    ] = None,
    split: Annotated[str, typer.Option(help="Which scored split.")] = "test",
) -> None:
    """STS Spearman against the dimensions kept, per task and transform family."""
    from baihua.eval.plots import k_sweep_figure, read_records, save

    records = read_records(
        input,
        ["model", "pooling", "transform", "split", "scores", "avg"],
        "baihua eval --output FILE.json",
    )
    poolings = split_list(pooling) if pooling else None
    wrote(save(k_sweep_figure(records, poolings=poolings, split=split), out))


@plot_cli.command("spectrum")
@user_errors
def plot_spectrum(
    whitening: Annotated[Path, typer.Option(help="Whitening artifact folder (`baihua fit`).")],
    out: PlotOutOpt,
    k: Annotated[int | None, typer.Option(help="Mark this k (default: the artifact's).")] = None,
) -> None:
    """Eigenvalue spectrum of a fitted whitening: explained variance and cumulative, k marked."""
    from baihua.eval.plots import save, spectrum_figure
    from baihua.whitening import Whitening, load_transform

    transform = load_transform(whitening)
    if not isinstance(transform, Whitening):
        raise UsageError(f"{whitening}: a {type(transform).__name__} artifact has no spectrum")
    k = k or transform.n_components_
    if not 1 <= k <= transform.n_features_in_:
        raise UsageError(f"--k must be between 1 and {transform.n_features_in_}, got {k}")
    space = transform.metadata.spec
    title = (
        f"{space.get('model')} {space.get('pooling')}: whitening fitted on "
        f"{transform.n_samples_seen_} vectors"
    )
    wrote(save(spectrum_figure(transform.explained_variance_, k, title), out))


@plot_cli.command("retrieval")
@user_errors
def plot_retrieval(
    input: Annotated[
        Path, typer.Option("--input", help="JSON from `baihua eval-retrieval run --output`.")
    ],
    out: PlotOutOpt,
    metric: Annotated[str, typer.Option(help="MRR@10, nDCG@10, R@1, R@10, R@<top-k>.")] = "MRR@10",
) -> None:
    """Retrieval quality against QPS and index bytes, a point per transform and re-rank."""
    from baihua.eval.plots import read_records, retrieval_figure, save

    fields = [
        "dataset",
        "model",
        "transform",
        "rerank",
        "metrics",
        "qps",
        "index_bytes",
        "graph_bytes",
    ]
    records = read_records(input, fields, "baihua eval-retrieval run --output FILE.json")
    wrote(save(retrieval_figure(records, metric), out))
