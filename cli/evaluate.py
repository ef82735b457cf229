"""`baihua eval` (the STS table) and `baihua eval-retrieval run|build` (BEIR retrieval)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from baihua.cli.common import (
    BackendOpt,
    BatchSizeOpt,
    ConfigOpt,
    DtypeOpt,
    MaxLengthOpt,
    check_text_type,
    load_settings,
    progress_bar,
    split_list,
    user_errors,
)
from baihua.core.errors import UsageError

if TYPE_CHECKING:
    from baihua.core.progress import Progress
    from baihua.encoder import Encoder
    from baihua.serving.settings import Settings

R = TypeVar("R")

eval_retrieval_cli = typer.Typer(
    help="Retrieval evaluation on BEIR folders (corpus.jsonl, queries.jsonl, qrels/).",
    no_args_is_help=True,
)

ModelsOpt = Annotated[str, typer.Option(help="Models, comma-separated.")]
PoolingsOpt = Annotated[str | None, typer.Option(help="Poolings, comma-separated.")]
OutputOpt = Annotated[Path | None, typer.Option(help="Write .json, .csv or .md.")]
CacheDirOpt = Annotated[Path | None, typer.Option(help="Vector cache folder.")]
StsMaxLengthOpt = Annotated[
    int | None, typer.Option(help="Token limit (default: 64, 128 for PAWSX).")
]


def vector_cache(settings: Settings) -> Path:
    """Where the evaluations keep the vectors they encoded."""
    from baihua.encoder import default_cache_dir

    return (settings.cache_dir or default_cache_dir()) / "vectors"


def check_output(output: Path | None) -> None:
    from baihua.eval.report import FORMATS

    if output is not None and output.suffix.lower() not in FORMATS:
        raise UsageError(f"--output {output}: use a .json, .csv or .md file name")


def run_per_model(
    models: str,
    config: Path | None,
    grid: Callable[[Settings, Encoder, Progress], list[R]],
    **overrides: Any,
) -> list[R]:
    """For each of the comma-separated ``models``: its settings (``config`` and
    ``overrides``), its encoder and a progress bar, handed to ``grid``, which runs one model's
    evaluation; every model's results, in order."""
    from baihua.serving.components import build_encoder

    results: list[R] = []
    for name in split_list(models):
        settings = load_settings(config, model=name, **overrides)
        encoder = build_encoder(settings)
        with progress_bar(f"encode {name}") as bar:
            results += grid(settings, encoder, bar.update)
    return results


@user_errors
def eval_sts(
    data_dir: Annotated[Path, typer.Option(help="Folder of task folders <T>/<T>.{split}.data.")],
    model: ModelsOpt = "me5-small",
    pooling: PoolingsOpt = None,
    tasks: Annotated[str | None, typer.Option(help="Default: every task folder.")] = None,
    whitening: Annotated[
        str,
        typer.Option(
            help="Transforms: none, full, N, rot-N, b<β>g<γ>[e<ε>][d<D>]-<N|full>, abtt<D>-<N>, "
            "shrink<ε>-<N>, jl-<N>[-s<seed>], flow."
        ),
    ] = "none,full,256,128,rot-256",
    fit_on: Annotated[
        str,
        typer.Option(
            help="Sentences the transforms are fitted on (never labels): task (all its splits), "
            "all-tasks (every task's, one fit), splits joined by + (test, train+valid), a "
            "corpus file, or an artifact folder from `baihua fit` (then the rows are none and "
            "that artifact)."
        ),
    ] = "task",
    splits: Annotated[str, typer.Option(help="Splits to score, comma-separated.")] = "test",
    select_on: Annotated[
        str | None,
        typer.Option(
            help="Choose the row best on this split (valid), per task and for all tasks, and "
            "report its test score beside the best on test; needs both in --splits. Written "
            "to <output stem>-selection<suffix> too."
        ),
    ] = None,
    max_dims: Annotated[
        int | None, typer.Option(help="With --select-on: only rows of at most this many dims.")
    ] = None,
    max_length: StsMaxLengthOpt = None,
    output: OutputOpt = None,
    batch_size: BatchSizeOpt = None,
    cache_dir: CacheDirOpt = None,
    backend: BackendOpt = None,
    dtype: DtypeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """STS Spearman × 100 for models × poolings × transforms (the BERT-whitening table)."""
    from baihua.encoder.corpus import iter_corpus
    from baihua.eval import selection
    from baihua.eval.datasets import task_names
    from baihua.eval.report import markdown, write_report
    from baihua.eval.sts import StsEval, StsResult, fit_splits
    from baihua.eval.transforms import artifact_spec, parse_transform

    check_output(output)
    if select_on is not None and not {select_on, "test"} <= set(split_list(splits)):
        raise UsageError(f"--select-on {select_on} needs --splits {select_on},test")
    if max_dims is not None and select_on is None:
        raise UsageError("--max-dims limits what --select-on chooses from; add --select-on valid")
    transforms = [parse_transform(name) for name in split_list(whitening)]
    fit_texts: str | list[str] = fit_on
    if fit_on in ("task", "all-tasks") or fit_splits(fit_on):
        pass
    elif Path(fit_on).is_dir():
        transforms = [parse_transform("none"), artifact_spec(Path(fit_on))]
        fit_texts = "test"  # nothing is fitted: encode no more than the scored split
    else:
        fit_texts = list(iter_corpus(Path(fit_on)))

    def sts_grid(settings: Settings, encoder: Encoder, progress: Progress) -> list[StsResult]:
        return StsEval(
            data_dir=data_dir,
            tasks=split_list(tasks) if tasks else task_names(data_dir),
            poolings=split_list(pooling) if pooling else [encoder.pooling],
            transforms=transforms,
            cache_dir=vector_cache(settings),
            fit_on=fit_texts,
            splits=split_list(splits),
            max_length=max_length,
            progress=progress,
        ).run(encoder)

    results = run_per_model(
        model,
        config,
        sts_grid,
        batch_size=batch_size,
        cache_dir=cache_dir,
        backend=backend,
        dtype=dtype,
    )
    typer.echo(markdown(results))
    if output is not None:
        write_report(results, output)
    if select_on is not None:
        chosen = selection.select(results, select_on, "test", max_dims)
        typer.echo("\n" + selection.markdown(chosen))
        if output is not None:
            selection.write_report(chosen, selection.selection_path(output))


@eval_retrieval_cli.command("run")
@user_errors
def eval_retrieval_run(
    data_dir: Annotated[
        Path, typer.Option(help="A BEIR folder, or a folder of them (one table row set each).")
    ],
    model: ModelsOpt = "me5-small",
    pooling: PoolingsOpt = None,
    whitening: Annotated[
        str,
        typer.Option(
            help="Transforms fitted on the corpus, as in `baihua eval`: none, full, N, rot-N, "
            "b<β>g<γ>[e<ε>][d<D>]-<N>, abtt<D>-<N>, shrink<ε>-<N>, jl-<N>[-s<seed>]."
        ),
    ] = "none",
    rerank: Annotated[str, typer.Option(help="none, geodesic; comma-separated.")] = "none",
    mode: Annotated[
        str, typer.Option(help="dense, sparse (BM25 over jieba words), hybrid; comma-separated.")
    ] = "dense",
    fusion: Annotated[
        str, typer.Option(help="For hybrid: rrf[-K] (k = 60), weighted[-W] (dense weight 0.5).")
    ] = "rrf,weighted",
    top_k: Annotated[int, typer.Option(help="Hits per query; Recall@top-k is reported.")] = 100,
    index: Annotated[str, typer.Option(help="FAISS index_factory string.")] = "Flat",
    search_params: Annotated[str, typer.Option(help="FAISS search settings, e.g. nprobe=16.")] = "",
    split: Annotated[str, typer.Option(help="Reads qrels/<split>.tsv.")] = "test",
    corpus_text_type: Annotated[
        str,
        typer.Option(help="passage, or query for symmetric tasks (e5: 'query: ' on both sides)."),
    ] = "passage",
    max_length: MaxLengthOpt = None,
    output: OutputOpt = None,
    batch_size: BatchSizeOpt = None,
    cache_dir: CacheDirOpt = None,
    backend: BackendOpt = None,
    dtype: DtypeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """MRR@10, Recall@1/10/top-k, nDCG@10, QPS and index bytes per transform × rerank."""
    from baihua.eval.beir import beir_folders, load_beir
    from baihua.eval.retrieval import (
        DEFAULT_MAX_LENGTH,
        RetrievalEval,
        RetrievalResult,
        check_modes,
        check_reranks,
        check_top_k,
        markdown,
        parse_fusion,
        write_report,
    )
    from baihua.eval.transforms import parse_transform

    check_output(output)
    transforms = [parse_transform(name) for name in split_list(whitening)]
    reranks = check_reranks(split_list(rerank))
    modes = check_modes(split_list(mode))
    fusions = [parse_fusion(name) for name in split_list(fusion)]
    check_top_k(top_k)
    datasets = [load_beir(folder, split) for folder in beir_folders(data_dir)]
    if modes == ["sparse"]:  # BM25 needs no model
        grid = RetrievalEval(datasets, [], [], Path(), top_k=top_k, modes=modes)
        sparse_results = grid.run_sparse()
        typer.echo(markdown(sparse_results))
        if output is not None:
            write_report(sparse_results, output)
        return

    def retrieval_grid(
        settings: Settings, encoder: Encoder, progress: Progress
    ) -> list[RetrievalResult]:
        return RetrievalEval(
            datasets=datasets,
            poolings=split_list(pooling) if pooling else [encoder.pooling],
            transforms=transforms,
            cache_dir=vector_cache(settings),
            reranks=reranks,
            top_k=top_k,
            factory=index,
            search_params=search_params,
            max_length=settings.max_length or DEFAULT_MAX_LENGTH,
            geodesic_k=settings.geodesic_k,
            geodesic_candidates=settings.geodesic_candidates,
            geodesic_reach=settings.geodesic_reach,
            corpus_text_type=check_text_type(corpus_text_type, "--corpus-text-type"),
            modes=modes,
            fusions=fusions,
            progress=progress,
        ).run(encoder)

    results = run_per_model(
        model,
        config,
        retrieval_grid,
        max_length=max_length,
        batch_size=batch_size,
        cache_dir=cache_dir,
        backend=backend,
        dtype=dtype,
    )
    typer.echo(markdown(results))
    if output is not None:
        write_report(results, output)


@eval_retrieval_cli.command("build")
@user_errors
def eval_retrieval_build(
    data_dir: Annotated[Path, typer.Option(help="Folder of STS task folders.")],
    out: Annotated[Path, typer.Option(help="Writes one BEIR folder per task here.")],
    tasks: Annotated[str | None, typer.Option(help="Default: every task folder.")] = None,
    split: Annotated[str, typer.Option(help="STS split to turn into qrels/<split>.tsv.")] = "test",
    min_label: Annotated[float, typer.Option(help="Pairs labelled at least this match.")] = 1.0,
    chains: Annotated[
        bool,
        typer.Option(
            help="Paraphrases of paraphrases instead: <task>-chains (direct partners left in "
            "the corpus as bridges) and <task>-chains-nobridge."
        ),
    ] = False,
    exact_terms: Annotated[
        bool,
        typer.Option(
            help="Exact-term queries instead: <task>-exact, each query a code or word found in "
            "one corpus text only."
        ),
    ] = False,
) -> None:
    """STS pair tasks as BEIR folders: matching text1s query their text2s among all text2s."""
    from baihua.eval.beir import build_from_sts
    from baihua.eval.datasets import task_names

    names = split_list(tasks) if tasks else task_names(data_dir)
    if chains and exact_terms:
        raise UsageError("--chains and --exact-terms build different sets: choose one")
    built = build_from_sts(
        data_dir, names, split, out, min_label, chains=chains, exact_terms=exact_terms
    )
    for dataset in built:
        typer.echo(
            f"wrote {out / dataset.name}: {len(dataset.queries)} queries, "
            f"{len(dataset.corpus)} documents",
            err=True,
        )
