"""Corpus files for the batch jobs: one sentence a line, TSV pairs, or JSON lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


class CorpusError(ValueError):
    """A corpus problem a user can fix; the message starts with `file:line:`."""


def corpus_format(path: Path) -> str:
    """`jsonl` for .jsonl/.json, `tsv` for .tsv/.data (text1 TAB text2 [TAB label]), else lines."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix in (".tsv", ".data"):
        return "tsv"
    return "lines"


def _parse_line(line: str, fmt: str, where: str) -> tuple[list[str], dict]:
    if fmt == "lines":
        return [line], {}
    if fmt == "tsv":
        columns = line.split("\t")
        if len(columns) not in (2, 3):
            raise CorpusError(
                f"{where}: expected text1<TAB>text2[<TAB>label], got {len(columns)} columns"
            )
        return columns[:2], {}
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise CorpusError(f"{where}: not valid JSON ({err.msg})") from err
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise CorpusError(f'{where}: expected an object with a string "text" field')
    return [record["text"]], record


def iter_corpus_records(path: Path) -> Iterator[tuple[int, list[str], dict]]:
    """(line number, texts on the line, the JSON record or {}) for every non-blank line.

    Blank lines are skipped; any other line that does not parse is a CorpusError naming it.
    """
    if not path.is_file():
        raise CorpusError(f"{path}: no such file")
    fmt = corpus_format(path)
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            where = f"{path}:{line_no}"
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                raise CorpusError(f"{where}: not valid UTF-8 (byte {err.start})") from err
            if not line.strip():
                continue
            texts, record = _parse_line(line, fmt, where)
            yield line_no, texts, record


def iter_corpus(path: Path) -> Iterator[str]:
    """Every sentence of the corpus, in file order."""
    for _, texts, _ in iter_corpus_records(path):
        yield from texts


def count_sentences(path: Path) -> int:
    """Read the whole file once: validates every line before any expensive encoding starts."""
    return sum(1 for _ in iter_corpus(path))
