"""`baihua embed`: texts from the arguments or stdin to JSON lines or a .npy matrix."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from baihua.cli.common import (
    BackendOpt,
    ConfigOpt,
    DtypeOpt,
    MaxLengthOpt,
    ModelOpt,
    PoolingOpt,
    TextTypeOpt,
    check_text_type,
    load_settings,
    user_errors,
)
from baihua.core.errors import UsageError


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
