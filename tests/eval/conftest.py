"""STS task folders written for a test: a toy task with every split and a test-only PAWSX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

WORDS = ["hello", "world", "bert", "我", "在", "中国", "大", "人", "a b", "c d e", "f g"]


def write_task(root: Path, name: str, splits: dict[str, list[str]]) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    for split, lines in splits.items():
        (folder / f"{name}.{split}.data").write_text("".join(f"{ln}\n" for ln in lines))


def pairs(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [
        f"{' '.join(rng.choice(WORDS, 3))}\t{' '.join(rng.choice(WORDS, 3))}\t{rng.integers(0, 6)}"
        for _ in range(n)
    ]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    write_task(
        tmp_path, "TOY", {"train": pairs(30, 0), "valid": pairs(10, 1), "test": pairs(20, 2)}
    )
    write_task(tmp_path, "PAWSX", {"test": pairs(20, 3)})
    (tmp_path / "not-a-task").mkdir()
    return tmp_path
