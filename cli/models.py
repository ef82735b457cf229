"""`baihua models list` and `baihua models prepare`: the presets, and the cache filled ahead."""

from __future__ import annotations

from typing import Annotated

import typer

from baihua.cli.common import ConfigOpt, load_settings, user_errors

models_cli = typer.Typer(help="List and prepare models.", no_args_is_help=True)


@models_cli.command("list")
def models_list() -> None:
    """Presets usable as --model."""
    from baihua.encoder.models import load_presets

    for spec in load_presets().values():
        typer.echo(f"{spec.name}\t{spec.source}\tpooling={spec.pooling}")


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
    config: ConfigOpt = None,
) -> None:
    """Expand a bundled model into the cache now instead of on first use; with --backend, build
    and check the backend's export too."""
    from baihua.encoder.models import model_path, resolve_model
    from baihua.serving.components import build_encoder

    settings = load_settings(config, model=name, backend=backend)
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
