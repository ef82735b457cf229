"""Result tables (STS, retrieval): printed, or written as JSON, CSV or markdown by suffix."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from baihua.core.errors import UsageError
from baihua.eval.sts import StsResult

FORMATS = (".json", ".csv", ".md")


def averages(result: StsResult) -> tuple[float, float]:
    """Plain mean over tasks, and mean weighted by each task's number of pairs."""
    scores = [result.scores[t] for t in result.scores]
    sizes = [result.sizes[t] for t in result.scores]
    avg = sum(scores) / len(scores)
    weighted = sum(s * n for s, n in zip(scores, sizes, strict=True)) / sum(sizes)
    return avg, weighted


def table_rows(results: list[StsResult]) -> tuple[list[str], list[list[str]]]:
    tasks = list(results[0].scores)
    header = ["model", "backend", "dtype", "pooling", "transform", "split", *tasks]
    header += ["avg", "w-avg", "fit s"]
    rows = [
        [r.model, r.backend, r.dtype, r.pooling, r.transform, r.split]
        + [f"{r.scores[t]:.2f}" for t in tasks]
        + [f"{v:.2f}" for v in averages(r)]
        + [f"{sum(r.fit_seconds.values()):.1f}"]
        for r in results
    ]
    return header, rows


def markdown(results: list[StsResult]) -> str:
    return markdown_table(*table_rows(results))


def write_report(results: list[StsResult], path: Path) -> None:
    records = [{**asdict(r), "avg": averages(r)[0], "w_avg": averages(r)[1]} for r in results]
    write_table(path, *table_rows(results), records)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(
    path: Path, header: list[str], rows: list[list[str]], records: list[dict[str, Any]]
) -> None:
    """The table as CSV or markdown, or ``records`` (full precision) as JSON, by suffix."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        path.write_text(json.dumps(records, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    elif suffix == ".csv":
        buffer = io.StringIO()
        csv.writer(buffer).writerows([header, *rows])
        path.write_text(buffer.getvalue(), encoding="utf-8")
    elif suffix == ".md":
        path.write_text(markdown_table(header, rows), encoding="utf-8")
    else:
        raise UsageError(f"--output {path}: use a .json, .csv or .md file name")
