"""`baihua export`: a sentence-transformers folder that gives baihua's vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from baihua.cli.common import ConfigOpt, MaxLengthOpt, ModelOpt, load_settings, user_errors
from baihua.core.errors import UsageError


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
