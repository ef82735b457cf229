"""Choosing a transform without looking at test: the grid row with the best score on a
selection split (valid), reported by its test score beside the oracle (the best on test).

Two protocols: per task (each task gets the row best on its own valid split) and one row for
all tasks (best mean valid score). Labels of the test split are read only to score the choice
and the oracle, never to choose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from baihua.core.errors import UsageError
from baihua.eval.report import markdown_table, write_table
from baihua.eval.sts import StsResult

ALL_TASKS = "avg"


@dataclass(frozen=True)
class Row:
    """One (pooling, transform) of the grid."""

    pooling: str
    transform: str
    dim: int

    @property
    def label(self) -> str:
        return f"{self.transform} ({self.pooling}, {self.dim})"


@dataclass
class Choice:
    """For one task (or ``ALL_TASKS``): the row chosen on the selection split, its scores, and
    the oracle row with its test score. ``raw_test``: the ``none`` row's test score, if any."""

    task: str
    chosen: Row
    chosen_select: float
    chosen_test: float
    oracle: Row
    oracle_test: float
    raw_test: float | None


@dataclass
class Selection:
    select_on: str
    max_dims: int | None
    per_task: list[Choice]
    one_for_all: Choice

    def per_task_means(self) -> tuple[float, float, float]:
        """Means over tasks of the per-task choices' selection and test scores, and of the
        per-task oracles' test scores."""
        n = len(self.per_task)
        return (
            sum(c.chosen_select for c in self.per_task) / n,
            sum(c.chosen_test for c in self.per_task) / n,
            sum(c.oracle_test for c in self.per_task) / n,
        )


def select(
    results: Sequence[StsResult],
    select_on: str = "valid",
    report_on: str = "test",
    max_dims: int | None = None,
) -> Selection:
    """Choose on ``select_on`` among the rows of at most ``max_dims`` dims (all if None)."""
    if select_on == report_on:
        raise UsageError(
            f"--select-on {select_on}: choosing on the split that is reported is the oracle, "
            "which is shown anyway; select on valid"
        )
    by_split: dict[str, dict[Row, StsResult]] = {select_on: {}, report_on: {}}
    for r in results:
        if r.split in by_split:
            by_split[r.split][Row(r.pooling, r.transform, r.dim)] = r
    for split, scored in by_split.items():
        if not scored:
            raise UsageError(f"selection needs scores on {split}: add it to --splits")
    rows = [row for row in by_split[report_on] if max_dims is None or row.dim <= max_dims]
    rows = [row for row in rows if row in by_split[select_on]]
    if not rows:
        raise UsageError(f"no transform in the grid keeps at most {max_dims} dims")
    select_scores = {row: by_split[select_on][row].scores for row in rows}
    test_scores = {row: by_split[report_on][row].scores for row in rows}
    tasks = list(test_scores[rows[0]])
    raw = next(
        (by_split[report_on][row].scores for row in by_split[report_on] if row.transform == "none"),
        None,
    )

    def choose(task: str, score: dict[Row, float], test: dict[Row, float]) -> Choice:
        chosen = max(rows, key=lambda row: score[row])  # the first row wins a tie
        oracle = max(rows, key=lambda row: test[row])
        raw_test = None if raw is None else _mean(raw, tasks) if task == ALL_TASKS else raw[task]
        return Choice(task, chosen, score[chosen], test[chosen], oracle, test[oracle], raw_test)

    per_task = [
        choose(
            task,
            {row: select_scores[row][task] for row in rows},
            {row: test_scores[row][task] for row in rows},
        )
        for task in tasks
    ]
    one_for_all = choose(
        ALL_TASKS,
        {row: _mean(select_scores[row], tasks) for row in rows},
        {row: _mean(test_scores[row], tasks) for row in rows},
    )
    return Selection(select_on, max_dims, per_task, one_for_all)


def _mean(scores: dict[str, float], tasks: Sequence[str]) -> float:
    return sum(scores[t] for t in tasks) / len(tasks)


def table_rows(selection: Selection) -> tuple[list[str], list[list[str]]]:
    s = selection.select_on
    header = ["task", "raw test", f"chosen on {s}", s, "test", "oracle (best on test)", "test"]

    def cells(raw: float | None, chosen: str, scores: tuple[float, float, float], oracle: str):
        raw_cell = "" if raw is None else f"{raw:.2f}"
        select_score, test, oracle_test = (f"{v:.2f}" for v in scores)
        return [raw_cell, chosen, select_score, test, oracle, oracle_test]

    rows = [
        [c.task, *cells(c.raw_test, c.chosen.label, _scores(c), c.oracle.label)]
        for c in selection.per_task
    ]
    one = selection.one_for_all
    rows.append(["avg, per-task choices", *cells(one.raw_test, "", selection.per_task_means(), "")])
    rows.append(
        [
            "avg, one row for all",
            *cells(one.raw_test, one.chosen.label, _scores(one), one.oracle.label),
        ]
    )
    return header, rows


def _scores(choice: Choice) -> tuple[float, float, float]:
    return choice.chosen_select, choice.chosen_test, choice.oracle_test


def markdown(selection: Selection) -> str:
    limit = (
        "" if selection.max_dims is None else f" among rows of at most {selection.max_dims} dims"
    )
    note = f"Chosen on {selection.select_on}{limit}; test labels only score the choice.\n\n"
    return note + markdown_table(*table_rows(selection))


def write_report(selection: Selection, path: Path) -> None:
    write_table(path, *table_rows(selection), [asdict(selection)])


def selection_path(output: Path) -> Path:
    """Where ``--select-on`` writes its table next to ``--output``: ``<stem>-selection<suffix>``."""
    return output.with_name(f"{output.stem}-selection{output.suffix}")
