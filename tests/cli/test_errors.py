"""Errors a user can cause are one line and exit code 1; anything else is a bug with a traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from baihua.cli.common import user_errors
from baihua.cli.main import cli
from baihua.core.errors import BaihuaError, UsageError
from baihua.encoder import ModelLoadError
from baihua.encoder.corpus import CorpusError
from baihua.encoder.me5 import E5FormatError
from baihua.eval.datasets import DatasetError
from baihua.index import DuplicateIdError, StoreLockedError, StoreMismatchError
from baihua.serving.settings import SettingsError
from baihua.whitening import ArtifactError, ArtifactMismatchError

runner = CliRunner()


@pytest.mark.parametrize(
    "error",
    [
        ArtifactError,
        ArtifactMismatchError,
        CorpusError,
        DatasetError,
        DuplicateIdError,
        E5FormatError,
        ModelLoadError,
        SettingsError,
        StoreLockedError,
        StoreMismatchError,
        UsageError,
    ],
)
def test_domain_errors_are_baihua_errors(error: type[Exception]) -> None:
    assert issubclass(error, BaihuaError)


def command_raising(error: Exception) -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)

    @app.command()
    @user_errors
    def broken() -> None:
        raise error

    return app


@pytest.mark.parametrize("bug", [ValueError("bad state"), KeyError("x"), RuntimeError("boom")])
def test_a_bug_is_not_caught_as_a_user_error(bug: Exception) -> None:
    result = runner.invoke(command_raising(bug), [])
    assert result.exception is bug
    assert "baihua: error" not in result.stderr


@pytest.mark.parametrize("error", [UsageError("--x must be 1"), FileNotFoundError("no f.txt")])
def test_a_user_error_is_one_line_and_exit_1(error: Exception) -> None:
    result = runner.invoke(command_raising(error), [])
    assert result.exit_code == 1
    assert result.stderr == f"baihua: error: {error}\n"


def test_an_installed_command_shows_a_bugs_traceback() -> None:
    script = textwrap.dedent(
        """
        import typer
        from baihua.cli.common import user_errors

        app = typer.Typer(pretty_exceptions_enable=False)

        @app.command()
        @user_errors
        def broken() -> None:
            {}["missing"]

        app()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().endswith("KeyError: 'missing'")


def test_an_invalid_setting_names_the_field(tiny_bert: Path) -> None:
    result = runner.invoke(cli, ["embed", "x", "--model", str(tiny_bert), "--max-length", "1"])
    assert result.exit_code == 1
    assert result.stderr.startswith("baihua: error: invalid settings: max_length:")
    assert "(got 1)" in result.stderr and len(result.stderr.splitlines()) == 1


def test_version_prints_the_installed_version() -> None:
    import importlib.metadata

    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"baihua {importlib.metadata.version('baihua')}\n"


def test_help_does_not_import_torch() -> None:
    script = "import sys; from baihua.cli.main import main; sys.argv = ['baihua', '--help']\n"
    script += "try:\n    main()\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.rstrip().endswith("False")
