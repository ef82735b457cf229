"""Corpus files for the batch jobs: one sentence a line, TSV pairs, or JSON lines."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from baihua.core.errors import BaihuaError


class CorpusError(BaihuaError, ValueError):
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


def decode_lines(raw_lines: Iterable[bytes], name: str) -> Iterator[tuple[int, str]]:
    """(line number, line without its end) for UTF-8 byte lines (a file or stdin opened in
    binary); a line that is not UTF-8 is a CorpusError naming ``name`` and the line."""
    for line_no, raw in enumerate(raw_lines, start=1):
        try:
            yield line_no, raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as err:
            raise CorpusError(f"{name}:{line_no}: not valid UTF-8 (byte {err.start})") from err


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its end) for every line of a UTF-8 file."""
    if not path.is_file():
        raise CorpusError(f"{path}: no such file")
    with path.open("rb") as handle:
        yield from decode_lines(handle, str(path))


def iter_corpus_records(path: Path) -> Iterator[tuple[int, list[str], dict]]:
    """(line number, texts on the line, the JSON record or {}) for every non-blank line.

    Blank lines are skipped; any other line that does not parse is a CorpusError naming it.
    """
    fmt = corpus_format(path)
    for line_no, line in read_lines(path):
        if line.strip():
            texts, record = _parse_line(line, fmt, f"{path}:{line_no}")
            yield line_no, texts, record


def iter_corpus(path: Path) -> Iterator[str]:
    """Every sentence of the corpus, in file order."""
    for _, texts, _ in iter_corpus_records(path):
        yield from texts


def count_sentences(path: Path) -> int:
    """Read the whole file once: validates every line before any expensive encoding starts."""
    return sum(1 for _ in iter_corpus(path))
