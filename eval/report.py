"""Tables of STS results: printed, or written as JSON, CSV or markdown by the file's suffix."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path

from eval.sts import StsResult

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
    header = ["model", "pooling", "transform", "split", *tasks, "avg", "w-avg"]
    rows = [
        [r.model, r.pooling, r.transform, r.split]
        + [f"{r.scores[t]:.2f}" for t in tasks]
        + [f"{v:.2f}" for v in averages(r)]
        for r in results
    ]
    return header, rows


def markdown(results: list[StsResult]) -> str:
    header, rows = table_rows(results)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_report(results: list[StsResult], path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix == ".json":
        records = [{**asdict(r), "avg": averages(r)[0], "w_avg": averages(r)[1]} for r in results]
        path.write_text(json.dumps(records, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    elif suffix == ".csv":
        header, rows = table_rows(results)
        buffer = io.StringIO()
        csv.writer(buffer).writerows([header, *rows])
        path.write_text(buffer.getvalue(), encoding="utf-8")
    elif suffix == ".md":
        path.write_text(markdown(results), encoding="utf-8")
    else:
        raise ValueError(f"--output {path}: use a .json, .csv or .md file name")
