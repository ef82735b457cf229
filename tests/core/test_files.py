"""write_atomic: the old content or the new, never a part, and no temporaries left behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from baihua.core.files import write_atomic


def test_bytes_replace_the_old_content(tmp_path: Path) -> None:
    path = tmp_path / "progress.json"
    write_atomic(path, b"old")
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"]


def test_a_writer_function_gets_a_path_with_the_same_suffix(tmp_path: Path) -> None:
    path = tmp_path / "labels.npy"
    write_atomic(path, lambda p: np.save(p, np.arange(3)))  # np.save adds .npy when missing
    np.testing.assert_array_equal(np.load(path), np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["labels.npy"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    path = tmp_path / "index.faiss"
    write_atomic(path, b"old")

    def half_write(p: Path) -> None:
        p.write_bytes(b"ne")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, half_write)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["index.faiss"]
