"""STS task folders: `<TASK>/<TASK>.{train,valid,test}.data`, lines of text1 TAB text2 TAB label."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from baihua.core.errors import BaihuaError
from baihua.encoder.corpus import read_lines

SPLITS = ("train", "valid", "test")


class DatasetError(BaihuaError, ValueError):
    """A task folder or line a user can fix; the message names the file and line."""


@dataclass
class StsSplit:
    text1: list[str] = field(default_factory=list)
    text2: list[str] = field(default_factory=list)
    labels: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def texts(self) -> list[str]:
        return self.text1 + self.text2


@dataclass
class StsTask:
    name: str
    splits: dict[str, StsSplit]

    def texts(self) -> list[str]:
        """Every sentence of every split, duplicates included (the paper fits on all of them)."""
        return [text for split in self.splits.values() for text in split.texts()]


def read_split(path: Path) -> StsSplit:
    split = StsSplit()
    for line_no, line in read_lines(path):
        where = f"{path}:{line_no}"
        columns = line.split("\t")
        if len(columns) != 3:
            raise DatasetError(
                f"{where}: expected text1<TAB>text2<TAB>label, got {len(columns)} columns"
            )
        try:
            label = float(columns[2])
        except ValueError as err:
            raise DatasetError(f"{where}: label {columns[2]!r} is not a number") from err
        if not math.isfinite(label):
            raise DatasetError(f"{where}: label {columns[2]!r} is not finite")
        split.text1.append(columns[0])
        split.text2.append(columns[1])
        split.labels.append(label)
    if not split.labels:
        raise DatasetError(f"{path}: no pairs")
    return split


def load_task(data_dir: Path, name: str) -> StsTask:
    """Every split present; a task needs at least a test split."""
    folder = data_dir / name
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such task folder (tasks here: {task_names(data_dir)})")
    splits = {
        split: read_split(path)
        for split in SPLITS
        if (path := folder / f"{name}.{split}.data").is_file()
    }
    if "test" not in splits:
        raise DatasetError(f"{folder}: no {name}.test.data")
    return StsTask(name, splits)


def task_names(data_dir: Path) -> list[str]:
    """Folders of `data_dir` that hold a `<name>.test.data`, sorted."""
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: no such data directory")
    return sorted(
        folder.name
        for folder in data_dir.iterdir()
        if (folder / f"{folder.name}.test.data").is_file()
    )
