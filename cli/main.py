"""The root of the `baihua` command: `--version`, quiet libraries, and the command groups,
each in its own module (serve, embed, fit, export, eval, models, index, eval-retrieval, plot).

Every command imports what it runs on inside its body, so `baihua --help` stays fast."""

from __future__ import annotations

import importlib.metadata
import os
import sys
from typing import Annotated

import typer

from baihua.cli.embed import embed
from baihua.cli.evaluate import eval_retrieval_cli, eval_sts
from baihua.cli.export import export
from baihua.cli.fit import fit
from baihua.cli.index import index_cli
from baihua.cli.models import models_cli
from baihua.cli.plot import plot_cli
from baihua.cli.serve import serve

cli = typer.Typer(
    help="baihua (白化): sentence embeddings with whitening and retrieval.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
cli.command()(serve)
cli.command()(embed)
cli.command()(fit)
cli.command()(export)
cli.command("eval")(eval_sts)
cli.add_typer(models_cli, name="models")
cli.add_typer(index_cli, name="index")
cli.add_typer(eval_retrieval_cli, name="eval-retrieval")
cli.add_typer(plot_cli, name="plot")


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


def main() -> None:
    cli()
