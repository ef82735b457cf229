"""BEIR retrieval folders: read them, and make them from STS pair tasks.

A folder holds ``corpus.jsonl`` (``_id``, ``text``, optional ``title``), ``queries.jsonl``
(``_id``, ``text``) and ``qrels/<split>.tsv`` (header ``query-id corpus-id score``). As in BEIR,
only queries with a relevant document (score > 0) are evaluated, and a titled document's text is
``title + " " + text``.
"""

from __future__ import annotations

import csv
import json
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from baihua.eval.datasets import DatasetError, StsSplit, load_task
from baihua.index.segment import Segmenter

QRELS_HEADER = ["query-id", "corpus-id", "score"]
_CODE = re.compile(r"[a-z0-9]+(?:[-_./][a-z0-9]+)*")


@dataclass
class BeirDataset:
    """Corpus and queries in file order; ``relevant[q]`` maps corpus positions to relevance > 0."""

    name: str
    corpus_ids: list[str]
    corpus: list[str]
    query_ids: list[str]
    queries: list[str]
    relevant: list[dict[int, int]]


def beir_folders(data_dir: Path) -> list[Path]:
    """``data_dir`` itself when it holds a corpus.jsonl, else its sub-folders that do, sorted."""
    if (data_dir / "corpus.jsonl").is_file():
        return [data_dir]
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: no such data directory")
    folders = sorted(f for f in data_dir.iterdir() if (f / "corpus.jsonl").is_file())
    if not folders:
        raise DatasetError(f"{data_dir}: no corpus.jsonl here or in a sub-folder (BEIR layout)")
    return folders


def load_beir(folder: Path, split: str = "test") -> BeirDataset:
    corpus = dict(_read_records(folder / "corpus.jsonl", with_title=True))
    queries = dict(_read_records(folder / "queries.jsonl", with_title=False))
    position = {doc_id: i for i, doc_id in enumerate(corpus)}
    judged: dict[str, dict[int, int]] = {}
    path = folder / "qrels" / f"{split}.tsv"
    for where, query_id, doc_id, score in _read_qrels(path):
        if query_id not in queries:
            raise DatasetError(f"{where}: query-id {query_id!r} is not in queries.jsonl")
        if doc_id not in position:
            raise DatasetError(f"{where}: corpus-id {doc_id!r} is not in corpus.jsonl")
        if score > 0:
            judged.setdefault(query_id, {})[position[doc_id]] = score
    if not judged:
        raise DatasetError(f"{path}: no query has a relevant document (score > 0)")
    query_ids = [q for q in queries if q in judged]
    return BeirDataset(
        folder.name,
        list(corpus),
        list(corpus.values()),
        query_ids,
        [queries[q] for q in query_ids],
        [judged[q] for q in query_ids],
    )


def _read_records(path: Path, *, with_title: bool) -> Iterator[tuple[str, str]]:
    if not path.is_file():
        raise DatasetError(f"{path}: missing (BEIR layout: corpus.jsonl, queries.jsonl, qrels/)")
    seen: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(f"{where}: not a JSON object ({err.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DatasetError(f"{where}: expected an object with a string 'text'")
            if "_id" not in record:
                raise DatasetError(f"{where}: no '_id'")
            record_id = str(record["_id"])
            if record_id in seen:
                raise DatasetError(f"{where}: _id {record_id!r} repeats")
            seen.add(record_id)
            title = record.get("title") if with_title else None
            yield record_id, f"{title} {record['text']}" if title else record["text"]


def _read_qrels(path: Path) -> Iterator[tuple[str, str, str, int]]:
    if not path.is_file():
        raise DatasetError(f"{path}: missing (BEIR layout: qrels/<split>.tsv)")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        for line_no, row in enumerate(rows, start=1):
            where = f"{path}:{line_no}"
            if line_no == 1:
                if row != QRELS_HEADER:
                    raise DatasetError(f"{where}: expected the header {' '.join(QRELS_HEADER)}")
                continue
            if len(row) != 3:
                raise DatasetError(f"{where}: expected query-id<TAB>corpus-id<TAB>score")
            try:
                score = int(row[2])
            except ValueError:
                raise DatasetError(f"{where}: score {row[2]!r} is not an integer") from None
            yield where, row[0], row[1], score


def sts_to_beir(name: str, split: StsSplit, min_label: float = 1.0) -> BeirDataset:
    """A retrieval task from STS pairs: each distinct text1 of a positive pair (label >=
    ``min_label``) is a query whose relevant documents are its paired text2s; the corpus is every
    distinct text2 plus, as distractors, the text1s of negative pairs that are not queries (a
    query would find itself). Ids ``q<n>`` and ``d<n>`` number texts by first appearance."""
    positive = [label >= min_label for label in split.labels]
    queries = list(dict.fromkeys(t1 for t1, p in zip(split.text1, positive, strict=True) if p))
    query_set = set(queries)
    corpus: dict[str, int] = {}
    for text1, text2, is_positive in zip(split.text1, split.text2, positive, strict=True):
        corpus.setdefault(text2, len(corpus))
        if not is_positive and text1 not in query_set:
            corpus.setdefault(text1, len(corpus))
    query_index = {text: i for i, text in enumerate(queries)}
    relevant: list[dict[int, int]] = [{} for _ in queries]
    for text1, text2, is_positive in zip(split.text1, split.text2, positive, strict=True):
        if is_positive:
            relevant[query_index[text1]][corpus[text2]] = 1
    return BeirDataset(
        name,
        [f"d{i}" for i in range(len(corpus))],
        list(corpus),
        [f"q{i}" for i in range(len(queries))],
        queries,
        relevant,
    )


def sts_to_exact_terms(
    name: str,
    split: StsSplit,
    min_label: float = 1.0,
    *,
    max_queries: int = 1000,
    seed: int = 0,
    segmenter: Segmenter | None = None,
) -> BeirDataset:
    """Exact-term queries over the corpus of ``sts_to_beir``: each query is one term that
    occurs (as a substring, after NFKC and lower case) in exactly one corpus text, its only
    relevant document — what a user types who knows a code or a name from the document.

    A document's term is its first code (a run of Latin letters and digits, optionally joined by
    ``- _ . /``, at least 2 characters) found in no other document; else its longest Chinese
    dictionary word (jieba's precise mode, at least 2 characters) found in no other document.
    Up to ``max_queries`` documents with such a term are drawn (``seed``), in corpus order.
    """
    corpus = sts_to_beir(name, split, min_label).corpus
    segment = segmenter or Segmenter()
    texts = [unicodedata.normalize("NFKC", t).lower() for t in corpus]
    holding: dict[str, set[int]] = {}
    for position, text in enumerate(texts):
        for char in set(text):
            holding.setdefault(char, set()).add(position)

    def unique(term: str) -> bool:
        candidates = min((holding.get(c, set()) for c in set(term)), key=len)
        return sum(term in texts[d] for d in candidates) == 1

    chosen: dict[int, str] = {}
    for position, text in enumerate(texts):
        codes = [c for c in _CODE.findall(text) if len(c) >= 2 and unique(c)]
        if codes:
            chosen[position] = codes[0]
            continue
        words = sorted(
            (w for w in segment.words(corpus[position]) if len(w) >= 2),
            key=len,
            reverse=True,
        )
        word = next((w for w in words if unique(w)), None)
        if word is not None:
            chosen[position] = word
    rng = np.random.default_rng(seed)
    targets = sorted(chosen)
    if len(targets) > max_queries:
        targets = sorted(rng.choice(targets, size=max_queries, replace=False).tolist())
    return BeirDataset(
        name,
        [f"d{i}" for i in range(len(corpus))],
        corpus,
        [f"q{i}" for i in range(len(targets))],
        [chosen[t] for t in targets],
        [{t: 1} for t in targets],
    )


def sts_to_chains(
    name: str, split: StsSplit, min_label: float = 1.0, *, bridges: bool = True
) -> BeirDataset:
    """A retrieval task where the relevant documents are paraphrases of paraphrases.

    Positive pairs (label >= ``min_label``) join sentences into a graph; in each connected
    component that has two sentences two or more positive steps apart, the first sentence (in
    order of appearance) with such a partner is the query, and its relevant documents are the
    sentences of its component that are not directly paired with it. Its direct partners stay in
    the corpus as unjudged "bridges" (``bridges=False`` leaves them out, so nothing links the
    query to its relevant documents); every other sentence is a distractor. A kNN graph can help
    here only by walking query → bridge → relevant.
    """
    neighbours: dict[str, set[str]] = {}
    for text1, text2, label in zip(split.text1, split.text2, split.labels, strict=True):
        neighbours.setdefault(text1, set())
        neighbours.setdefault(text2, set())
        if label >= min_label and text1 != text2:
            neighbours[text1].add(text2)
            neighbours[text2].add(text1)
    seen: set[str] = set()
    queries: list[str] = []
    relevant_texts: list[list[str]] = []
    left_out: set[str] = set()
    for text in neighbours:  # dicts keep first appearance
        if text in seen:
            continue
        component = _component(text, neighbours)
        seen.update(component)
        for candidate in component:
            far = [t for t in component if t != candidate and t not in neighbours[candidate]]
            if far:
                queries.append(candidate)
                relevant_texts.append(far)
                if not bridges:
                    left_out.update(neighbours[candidate])
                break
    left_out.update(queries)
    corpus = [t for t in neighbours if t not in left_out]
    position = {text: i for i, text in enumerate(corpus)}
    relevant = [{position[t]: 1 for t in far} for far in relevant_texts]
    return BeirDataset(
        name,
        [f"d{i}" for i in range(len(corpus))],
        corpus,
        [f"q{i}" for i in range(len(queries))],
        queries,
        relevant,
    )


def _component(start: str, neighbours: dict[str, set[str]]) -> list[str]:
    """The sentences connected to ``start``, in order of appearance in ``neighbours``."""
    found, stack = {start}, [start]
    while stack:
        for other in neighbours[stack.pop()]:
            if other not in found:
                found.add(other)
                stack.append(other)
    return [text for text in neighbours if text in found]


def build_from_sts(
    data_dir: Path,
    tasks: Sequence[str],
    split: str,
    out: Path,
    min_label: float = 1.0,
    *,
    chains: bool = False,
    exact_terms: bool = False,
) -> list[BeirDataset]:
    """``sts_to_beir`` on ``split`` of each STS task folder, written to ``out/<task>``; with
    ``chains``, ``sts_to_chains`` instead, with and without bridges, to ``out/<task>-chains``
    and ``out/<task>-chains-nobridge``; with ``exact_terms``, ``sts_to_exact_terms`` to
    ``out/<task>-exact``."""
    loaded = [load_task(data_dir, name) for name in tasks]
    for task in loaded:
        if split not in task.splits:
            raise DatasetError(f"task {task.name} has no {split} split")
    datasets = []
    for task in loaded:
        pairs = task.splits[split]
        if chains:
            built = [
                sts_to_chains(f"{task.name}-chains", pairs, min_label),
                sts_to_chains(f"{task.name}-chains-nobridge", pairs, min_label, bridges=False),
            ]
        elif exact_terms:
            built = [sts_to_exact_terms(f"{task.name}-exact", pairs, min_label)]
        else:
            built = [sts_to_beir(task.name, pairs, min_label)]
        for dataset in built:
            if not dataset.queries:
                problem = (
                    f"no two sentences in {split} are two positive (label >= {min_label}) steps "
                    "apart"
                    if chains
                    else f"no pair in {split} has label >= {min_label}"
                )
                raise DatasetError(f"task {task.name}: {problem}")
            write_beir(dataset, out / dataset.name, split)
            datasets.append(dataset)
    return datasets


def write_beir(dataset: BeirDataset, folder: Path, split: str = "test") -> None:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    _write_jsonl(folder / "corpus.jsonl", dataset.corpus_ids, dataset.corpus)
    _write_jsonl(folder / "queries.jsonl", dataset.query_ids, dataset.queries)
    with (folder / "qrels" / f"{split}.tsv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(QRELS_HEADER)
        for query_id, judged in zip(dataset.query_ids, dataset.relevant, strict=True):
            for position, score in sorted(judged.items()):
                writer.writerow([query_id, dataset.corpus_ids[position], score])


def _write_jsonl(path: Path, ids: list[str], texts: list[str]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for record_id, text in zip(ids, texts, strict=True):
            handle.write(json.dumps({"_id": record_id, "text": text}, ensure_ascii=False) + "\n")
