"""Settings from BAIHUA_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from baihua.encoder import default_cache_dir
from baihua.serving.settings import load_settings


def test_an_empty_variable_is_unset_not_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for name in ("BAIHUA_CACHE_DIR", "BAIHUA_DATA_DIR", "BAIHUA_WHITENING", "BAIHUA_PORT"):
        monkeypatch.setenv(name, "")
    settings = load_settings()
    assert settings.cache_dir is None
    assert settings.data_dir == Path("data")
    assert settings.whitening is None
    assert settings.port == 8000
    assert default_cache_dir() == tmp_path / "xdg" / "baihua"  # the same rule for the model cache


def test_a_set_variable_is_taken(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BAIHUA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BAIHUA_PORT", "9001")
    settings = load_settings()
    assert settings.cache_dir == tmp_path / "cache"
    assert settings.port == 9001
