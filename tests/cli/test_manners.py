"""CLI manners: embed's input lines map one to one onto output rows; unknown models fail at once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
from typer.testing import CliRunner

from baihua.cli.main import cli

runner = CliRunner()


def embed(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    result = runner.invoke(cli, ["embed", *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_non_utf8_stdin_names_the_line(tiny_bert: Path) -> None:
    code, out, err = embed("--model", str(tiny_bert), stdin=b"hello\nworld \xff\xfe\n")
    assert code == 1 and out == ""
    assert err == "baihua: error: stdin:2: not valid UTF-8 (byte 6)\n"


def test_a_blank_stdin_line_is_refused_with_its_number(tiny_bert: Path) -> None:
    code, out, err = embed("--model", str(tiny_bert), stdin=b"hello\n  \nworld\n")
    assert code == 1 and out == ""
    assert err.startswith("baihua: error: stdin:2: blank line")


def test_a_blank_argument_is_refused_with_its_position(tiny_bert: Path) -> None:
    code, _, err = embed("hello", "", "--model", str(tiny_bert))
    assert code == 1 and "text 2 is blank" in err


def test_stdin_rows_line_up_with_input_lines(tiny_bert: Path) -> None:
    code, out, _ = embed("--model", str(tiny_bert), stdin="一\r\ntwo\n三".encode())
    assert code == 0
    assert [json.loads(line)["text"] for line in out.splitlines()] == ["一", "two", "三"]


def test_help_says_what_happens_to_blank_lines() -> None:
    result = runner.invoke(cli, ["embed", "--help"])
    assert "blank line is an error" in " ".join(result.stdout.split())


@pytest.mark.parametrize("offline", [True, False])
def test_an_unknown_hub_id_fails_at_once_pointing_to_models_list(
    monkeypatch: pytest.MonkeyPatch, offline: bool
) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
    code, _, err = embed("hello", "--model", "nosuch-org/nosuch-model")
    assert code == 1 and len(err.splitlines()) == 1
    assert "'nosuch-org/nosuch-model'" in err and "`baihua models list`" in err
    if offline:
        assert "HF_HUB_OFFLINE is set" in err


@pytest.mark.parametrize("name", ["./no/such/model", "/no/such/model", "a/b/c"])
def test_a_missing_folder_is_named(name: str) -> None:
    code, _, err = embed("hello", "--model", name)
    assert code == 1 and f"model {name!r}: no such folder" in err


def test_a_name_that_is_no_hub_id_is_refused() -> None:
    code, _, err = embed("hello", "--model", "not a model")
    assert code == 1 and "is not a preset, a local folder or a hub id" in err


def test_a_hub_id_in_the_local_hub_cache_loads_offline(tiny_bert: Path, tmp_path: Path) -> None:
    """The hub cache's layout (models--org--name/snapshots/<commit>, refs/main), as a download
    leaves it; HF_HUB_OFFLINE=1 stands for a machine without network."""
    commit = "0" * 40
    repo = tmp_path / "hub" / "models--org--tiny-bert"
    shutil.copytree(tiny_bert, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    baihua = Path(sys.executable).with_name("baihua")
    result = subprocess.run(
        [str(baihua), "embed", "hello", "--model", "org/tiny-bert"],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["embedding"]) == 32
