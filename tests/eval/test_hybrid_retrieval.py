"""Sparse and hybrid rows of the retrieval grid, and the exact-term query set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from baihua.encoder import Encoder, l2_normalize
from baihua.eval.beir import load_beir, sts_to_beir, sts_to_exact_terms, write_beir
from baihua.eval.datasets import StsSplit
from baihua.eval.retrieval import RetrievalEval, parse_fusion, score_rankings
from baihua.eval.transforms import parse_transform
from baihua.index.fusion import Fusion, fuse
from baihua.index.segment import Segmenter
from baihua.index.sparse import SparseIndex

CORPUS = [
    "型号XK-7731的滤芯怎么更换",
    "花呗还款日期可以推迟吗",
    "借呗额度为什么降低了",
    "手机银行转账限额是多少",
    "信用卡逾期一天有影响吗",
    "XK-7730 净化器说明书",
    "怎样开通花呗分期",
    "银行卡挂失之后怎么补办",
]
QUERIES = ["XK-7731", "花呗分期", "转账限额", "信用卡逾期"]
RELEVANT = [{0: 1}, {6: 1}, {3: 1}, {4: 1}]


@pytest.fixture
def beir_dir(tmp_path: Path) -> Path:
    from baihua.eval.beir import BeirDataset

    dataset = BeirDataset(
        "ZH",
        [f"d{i}" for i in range(len(CORPUS))],
        CORPUS,
        [f"q{i}" for i in range(len(QUERIES))],
        QUERIES,
        RELEVANT,
    )
    write_beir(dataset, tmp_path / "ZH")
    return tmp_path / "ZH"


def test_sparse_and_hybrid_rows_rank_as_bm25_and_its_fusion(
    tiny_bert: Path, beir_dir: Path, tmp_path: Path
) -> None:
    encoder = Encoder(str(tiny_bert), pooling="last-avg", device="cpu")
    dataset = load_beir(beir_dir)
    grid = RetrievalEval(
        datasets=[dataset],
        poolings=["last-avg"],
        transforms=[parse_transform("none")],
        cache_dir=tmp_path / "cache",
        top_k=10,
        modes=["dense", "sparse", "hybrid"],
        fusions=[Fusion("rrf", k=60), Fusion("weighted", weight=0.5)],
    )
    results = grid.run(encoder)
    assert [r.mode for r in results] == [
        "sparse", "dense", "hybrid rrf-60", "hybrid weighted-0.5",
    ]  # fmt: skip

    index = SparseIndex(Segmenter())
    index.upsert(list(range(len(CORPUS))), CORPUS)
    sparse = [[(h.id, h.score) for h in index.search(q, 10)] for q in QUERIES]
    ranked = np.full((len(QUERIES), 10), -1)
    for row, hits in enumerate(sparse):
        ranked[row, : len(hits)] = [i for i, _ in hits]
    assert results[0].metrics == pytest.approx(score_rankings(ranked, RELEVANT, 10))
    assert results[0].metrics["MRR@10"] == 1.0  # every query names a term of its document

    passages = l2_normalize(encoder.encode(CORPUS, text_type="passage", pooling="last-avg"))
    queries = l2_normalize(encoder.encode(QUERIES, text_type="query", pooling="last-avg"))
    scores = queries @ passages.T
    order = np.argsort(-scores, axis=1, kind="stable")
    dense = [[(int(i), float(scores[q, i])) for i in order[q]] for q in range(len(QUERIES))]
    for result, fusion in zip(results[2:], grid.fusions, strict=True):
        fused = [[f.id for f in fuse(d, s, fusion, 10)] for d, s in zip(dense, sparse, strict=True)]
        ranked = np.full((len(QUERIES), 10), -1)
        for row, ids in enumerate(fused):
            ranked[row, : len(ids)] = ids
        assert result.metrics == pytest.approx(score_rankings(ranked, RELEVANT, 10))
        assert result.index_bytes == results[1].index_bytes + results[0].index_bytes


def test_a_sparse_grid_needs_no_encoder(beir_dir: Path, tmp_path: Path) -> None:
    grid = RetrievalEval([load_beir(beir_dir)], [], [], tmp_path, top_k=10, modes=["sparse"])
    [row] = grid.run_sparse()
    assert row.mode == "sparse" and row.model == "bm25" and row.index_bytes > 0


def test_fusion_names_parse() -> None:
    assert parse_fusion("rrf") == Fusion("rrf", k=60)
    assert parse_fusion("rrf-10") == Fusion("rrf", k=10)
    assert parse_fusion("weighted-0.7") == Fusion("weighted", weight=0.7)


def test_exact_term_queries_name_a_term_found_in_their_document_only() -> None:
    text1 = ["花呗怎么还", "借呗额度", "银行转账", "问一下"]
    text2 = ["型号XK-7731的滤芯", "借呗额度为什么降低", "花呗还款日期", "手机银行转账限额"]
    split = StsSplit(text1, text2, [1.0, 1.0, 0.0, 1.0])
    dataset = sts_to_exact_terms("ZH-exact", split, segmenter=Segmenter())
    assert dataset.corpus == sts_to_beir("ZH", split).corpus
    assert dataset.queries[0] == "xk-7731"  # a code goes first
    for query, judged in zip(dataset.queries, dataset.relevant, strict=True):
        [target] = judged
        holders = [i for i, text in enumerate(dataset.corpus) if query in text.lower()]
        assert holders == [target] and len(query) >= 2


def test_exact_term_queries_are_capped_by_a_seeded_draw() -> None:
    texts = [f"编号A{i:03d}的订单" for i in range(30)]
    split = StsSplit(texts, texts[::-1], [1.0] * 30)
    first = sts_to_exact_terms("X", split, max_queries=5, seed=1, segmenter=Segmenter())
    again = sts_to_exact_terms("X", split, max_queries=5, seed=1, segmenter=Segmenter())
    assert len(first.queries) == 5 and first == again


def hand_written_beir(folder: Path) -> Path:
    """A BEIR folder as BEIR ships them (titles, a graded qrel, an unjudged query), written
    by hand rather than by ``write_beir``."""
    import json

    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as file:
        for i, text in enumerate(CORPUS):
            title = "说明书" if i in (0, 5) else ""
            record = {"_id": f"doc-{i}", "title": title, "text": text}
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as file:
        for i, query in enumerate([*QUERIES, "没有答案的问题"]):
            file.write(json.dumps({"_id": f"q-{i}", "text": query}, ensure_ascii=False) + "\n")
    rows = ["query-id\tcorpus-id\tscore"]
    rows += [f"q-{q}\tdoc-{d}\t{2 if q == 0 else 1}" for q, r in enumerate(RELEVANT) for d in r]
    rows += ["q-0\tdoc-5\t0"]  # judged, not relevant
    (folder / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def test_cli_runs_sparse_and_hybrid_rows_on_a_beir_folder(tiny_bert: Path, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from baihua.cli.main import cli

    folder = hand_written_beir(tmp_path / "beir" / "ZH")
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, [
        "eval-retrieval", "run", "--data-dir", str(folder.parent), "--model", str(tiny_bert),
        "--pooling", "last-avg", "--mode", "dense,sparse,hybrid", "--fusion", "rrf,weighted-0.7",
        "--top-k", "10", "--output", str(out), "--cache-dir", str(tmp_path / "c"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())
    assert [(r["dataset"], r["mode"]) for r in records] == [
        ("ZH", "sparse"), ("ZH", "dense"), ("ZH", "hybrid rrf-60"), ("ZH", "hybrid weighted-0.7"),
    ]  # fmt: skip
    sparse = records[0]
    assert sparse["metrics"]["MRR@10"] == 1.0  # each query names a term of its document only
    assert sparse["index_bytes"] > 0
    assert records[2]["index_bytes"] == records[1]["index_bytes"] + sparse["index_bytes"]
    assert result.stdout.count("| ZH | ") == 4


def test_cli_sparse_alone_loads_no_model(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from baihua.cli.main import cli

    folder = hand_written_beir(tmp_path / "beir" / "ZH")
    result = CliRunner().invoke(cli, [
        "eval-retrieval", "run", "--data-dir", str(folder), "--model", str(tmp_path / "no-model"),
        "--mode", "sparse", "--top-k", "10",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    [row] = [line for line in result.stdout.splitlines() if line.startswith("| ZH |")]
    assert " sparse " in row and " bm25 " in row
