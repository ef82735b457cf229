"""What every command group shares: the flags several commands take, one-line user errors, the
settings loader, the progress bar and the checks of flag values.

Imports stay cheap here (typer, tqdm, the error types): `baihua --help` loads this module."""

from __future__ import annotations

import functools
import logging
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


def show_steps() -> None:
    """Print baihua's own log lines, INFO and up, on stderr as `baihua: …`: the steps of a first
    start (expanding the model, exports, auto's measuring) take minutes and say so."""
    logger = logging.getLogger("baihua")
    if not any(isinstance(h, _StepHandler) for h in logger.handlers):
        handler = _StepHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("baihua: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    root = logging.getLogger()
    if not root.handlers:
        # Other libraries' warnings still print; and a library that calls logging.basicConfig()
        # on import (ONNX Runtime's quantiser does) finds a handler there and so no longer
        # prints baihua's lines a second time.
        others = logging.StreamHandler(sys.stderr)
        others.setLevel(logging.WARNING)
        others.addFilter(lambda record: not record.name.startswith("baihua"))
        root.addHandler(others)


class _StepHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `show_steps` adds (added once, however often it is called)."""


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


def progress_bar(desc: str, total: int | None = None, initial: int = 0) -> tqdm:
    """Sentences done, on stderr; a bare count when the total is not known."""
    return tqdm(total=total, initial=initial, desc=desc, unit="sent", file=sys.stderr)


def split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


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
BatchSizeOpt = Annotated[int | None, typer.Option(help="Encoder batch size.")]
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
