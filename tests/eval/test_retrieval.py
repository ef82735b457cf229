"""Retrieval evaluation: metrics, BEIR folders, the STS → BEIR builder, the grid and its CLI."""

from __future__ import annotations

import json
from pathlib import Path
from random import Random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import ndcg_score
from typer.testing import CliRunner

from baihua.cli.main import cli
from baihua.encoder import Encoder, ModelSpec, encoder_spec, l2_normalize
from baihua.eval.beir import load_beir, sts_to_beir, sts_to_chains, write_beir
from baihua.eval.cache import VectorCache
from baihua.eval.datasets import DatasetError, StsSplit
from baihua.eval.retrieval import RetrievalEval, ndcg_at, score_rankings
from baihua.eval.transforms import parse_transform

WORDS = ["hello", "world", "bert", "我", "在", "中国", "大", "人", "a b", "c d e", "f g"]

# ------------------------------------------------------------------------------------ metrics


def test_metrics_of_a_hand_made_ranking() -> None:
    ranked = np.array([[5, 1, 7, 2], [3, 4, 0, -1]])  # -1: FAISS found nothing more
    relevant = [{1: 1, 2: 1, 9: 1}, {3: 1}]
    metrics = score_rankings(np.pad(ranked, ((0, 0), (0, 6)), constant_values=-1), relevant, 10)
    # query 0: relevant at ranks 2 and 4, of 3 relevant; query 1: relevant at rank 1, of 1
    first_ndcg = (1 / np.log2(3) + 1 / np.log2(5)) / (1 + 1 / np.log2(3) + 1 / np.log2(4))
    assert metrics == pytest.approx(
        {"MRR@10": (1 / 2 + 1) / 2, "R@1": (0 + 1) / 2, "R@10": (2 / 3 + 1) / 2,
         "nDCG@10": (first_ndcg + 1) / 2}
    )  # fmt: skip


def test_ndcg_uses_graded_gains_and_the_ideal_order_of_all_judged_documents() -> None:
    ranked = np.array([[0, 8, 3]])  # gains 0, 2, 1; a third relevant document is never found
    relevant = [{8: 2, 3: 1, 6: 1}]
    expected = (2 / np.log2(3) + 1 / np.log2(4)) / (2 + 1 / np.log2(3) + 1 / np.log2(4))
    metrics = score_rankings(np.pad(ranked, ((0, 0), (0, 7)), constant_values=-1), relevant, 10)
    assert metrics["nDCG@10"] == pytest.approx(expected)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 3), min_size=2, max_size=30).filter(any),
    st.randoms(use_true_random=False),
    st.integers(1, 12),
)
def test_ndcg_equals_sklearn(grades: list[int], rng: Random, k: int) -> None:
    n = len(grades)
    ranking = list(range(n))
    rng.shuffle(ranking)
    relevant = [{doc: g for doc, g in enumerate(grades) if g > 0}]
    y_score = np.empty(n)
    y_score[ranking] = np.arange(n, 0, -1)  # distinct scores: no ties for sklearn to average
    gains = np.array([[grades[doc] for doc in ranking]], dtype=float)
    expected = ndcg_score(np.array([grades]), y_score[None], k=k)
    assert ndcg_at(gains, relevant, k)[0] == pytest.approx(expected)


# ------------------------------------------------------------------------------ BEIR folders


def toy_sts() -> StsSplit:
    pairs = [("a", "b", 1), ("a", "c", 1), ("d", "b", 0), ("e", "f", 0), ("a", "e", 0)]
    pairs += [("g", "h", 1), ("g", "h", 1)]
    return StsSplit([p[0] for p in pairs], [p[1] for p in pairs], [float(p[2]) for p in pairs])


def test_sts_pairs_become_queries_relevant_text2s_and_distractors() -> None:
    dataset = sts_to_beir("TOY", toy_sts())
    assert dataset.queries == ["a", "g"] and dataset.query_ids == ["q0", "q1"]
    # d and e are distractors (text1 of negative pairs); a is a query, so not one
    assert dataset.corpus == ["b", "c", "d", "f", "e", "h"]
    assert dataset.corpus_ids == ["d0", "d1", "d2", "d3", "d4", "d5"]
    assert dataset.relevant == [{0: 1, 1: 1}, {5: 1}]


def chain_sts() -> StsSplit:
    # a - b - c - d is a chain of paraphrases, e - f a lone pair, x and y negatives only
    pairs = [("a", "b", 1), ("b", "c", 1), ("x", "a", 0), ("c", "d", 1), ("e", "f", 1)]
    pairs += [("y", "c", 0), ("b", "a", 1)]
    return StsSplit([p[0] for p in pairs], [p[1] for p in pairs], [float(p[2]) for p in pairs])


def test_chain_queries_look_for_paraphrases_of_their_paraphrases() -> None:
    dataset = sts_to_chains("TOY-chains", chain_sts())
    # a's direct partner b stays as an unjudged bridge; e - f has nothing two steps apart
    assert dataset.queries == ["a"]
    assert dataset.corpus == ["b", "c", "x", "d", "e", "f", "y"]
    assert dataset.relevant == [{1: 1, 3: 1}]
    nobridge = sts_to_chains("TOY-chains-nobridge", chain_sts(), bridges=False)
    assert nobridge.queries == ["a"] and "b" not in nobridge.corpus
    assert [nobridge.corpus[p] for p in nobridge.relevant[0]] == ["c", "d"]


def test_cli_build_chains_writes_both_variants(tmp_path: Path) -> None:
    folder = tmp_path / "sts" / "TOY"
    folder.mkdir(parents=True)
    split = chain_sts()
    lines = zip(split.text1, split.text2, split.labels, strict=True)
    (folder / "TOY.test.data").write_text("".join(f"{a}\t{b}\t{int(y)}\n" for a, b, y in lines))
    result = CliRunner().invoke(cli, [
        "eval-retrieval", "build", "--data-dir", str(tmp_path / "sts"), "--chains",
        "--out", str(tmp_path / "out"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "TOY-chains", "TOY-chains-nobridge",
    ]  # fmt: skip
    assert load_beir(tmp_path / "out" / "TOY-chains") == sts_to_chains("TOY-chains", split)
    (folder / "TOY.test.data").write_text("a\tb\t1\nc\td\t1\n")
    result = CliRunner().invoke(cli, [
        "eval-retrieval", "build", "--data-dir", str(tmp_path / "sts"), "--chains",
        "--out", str(tmp_path / "out2"),
    ])  # fmt: skip
    assert result.exit_code == 1 and "no two sentences in test are two positive" in result.stderr


def test_a_written_beir_folder_reads_back_the_same(tmp_path: Path) -> None:
    dataset = sts_to_beir("TOY", toy_sts())
    write_beir(dataset, tmp_path / "TOY")
    assert (tmp_path / "TOY" / "qrels" / "test.tsv").read_text().splitlines() == [
        "query-id\tcorpus-id\tscore", "q0\td0\t1", "q0\td1\t1", "q1\td5\t1",
    ]  # fmt: skip
    assert load_beir(tmp_path / "TOY") == dataset


def write_folder(folder: Path, corpus: list[dict], queries: list[dict], qrels: list[str]) -> Path:
    (folder / "qrels").mkdir(parents=True)
    for name, records in (("corpus", corpus), ("queries", queries)):
        lines = [json.dumps(r, ensure_ascii=False) for r in records]
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels))
    return folder


def test_titles_join_the_text_and_unjudged_queries_are_left_out(tmp_path: Path) -> None:
    folder = write_folder(
        tmp_path / "T",
        [{"_id": "x", "title": "Title", "text": "body"}, {"_id": 7, "text": "plain"}],
        [{"_id": "q", "text": "ask"}, {"_id": "other", "text": "unjudged"}],
        ["q\t7\t2", "q\tx\t0"],
    )
    dataset = load_beir(folder)
    assert dataset.corpus == ["Title body", "plain"]
    assert dataset.query_ids == ["q"] and dataset.relevant == [{1: 2}]


@pytest.mark.parametrize(
    "qrels,message",
    [(["q\tzzz\t1"], r"test.tsv:2: corpus-id 'zzz' is not in corpus.jsonl"),
     (["nope\tx\t1"], r"test.tsv:2: query-id 'nope' is not in queries.jsonl"),
     (["q\tx\thigh"], r"test.tsv:2: score 'high' is not an integer"),
     (["q\tx\t0"], r"no query has a relevant document")],
)  # fmt: skip
def test_bad_qrels_name_the_file_and_line(tmp_path: Path, qrels: list[str], message: str) -> None:
    folder = write_folder(
        tmp_path / "T", [{"_id": "x", "text": "t"}], [{"_id": "q", "text": "a"}], qrels
    )
    with pytest.raises(DatasetError, match=message):
        load_beir(folder)


# --------------------------------------------------------------------------------- the grid


@pytest.fixture
def beir_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, 4)) + f" {i}" for i in range(40)]
    queries = [{"_id": f"q{i}", "text": texts[3 * i][:-2]} for i in range(8)]
    qrels = [f"q{i}\td{3 * i}\t1" for i in range(8)] + ["q0\td1\t2"]
    corpus = [{"_id": f"d{i}", "text": t} for i, t in enumerate(texts)]
    return write_folder(tmp_path / "beir" / "TOY", corpus, queries, qrels)


def not_called(texts: list[str], poolings: list[str]) -> dict[str, np.ndarray]:
    raise AssertionError(f"encoded again: {texts[:3]}")


def test_grid_caches_passages_and_queries_apart_and_scores_a_brute_force_ranking(
    tiny_bert: Path, beir_dir: Path, tmp_path: Path
) -> None:
    spec = ModelSpec("tiny-e5", str(tiny_bert), query_prefix="query: ", passage_prefix="passage: ")
    encoder = Encoder(spec, pooling="last-avg", device="cpu")
    dataset = load_beir(beir_dir)
    grid = RetrievalEval(
        datasets=[dataset],
        poolings=["last-avg"],
        transforms=[parse_transform("none"), parse_transform("rot-8")],
        reranks=["none", "geodesic"],
        cache_dir=tmp_path / "cache",
        top_k=10,
    )
    results = grid.run(encoder)
    assert [(r.transform, r.rerank, r.dim) for r in results] == [
        ("none", "none", 32), ("none", "geodesic", 32), ("rot-8", "none", 8),
        ("rot-8", "geodesic", 8),
    ]  # fmt: skip

    passages = encoder.encode(dataset.corpus, text_type="passage", pooling="last-avg")
    queries = encoder.encode(dataset.queries, text_type="query", pooling="last-avg")
    for text_type, texts, vectors in (
        ("passage", dataset.corpus, passages),
        ("query", dataset.queries, queries),
    ):
        space = encoder_spec(encoder, max_length=64)
        cache = VectorCache(tmp_path / "cache", space, text_type=text_type)
        cached = cache.get(texts, ["last-avg"], encode=not_called)["last-avg"]
        np.testing.assert_allclose(cached, vectors, atol=1e-5)
    scores = l2_normalize(queries) @ l2_normalize(passages).T
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    assert results[0].metrics == pytest.approx(score_rankings(ranked, dataset.relevant, 10))
    assert results[0].index_bytes > 40 * 32 * 4 and results[1].graph_bytes > 0
    assert all(r.qps > 0 for r in results)


def test_jl_rows_rank_by_the_seeded_random_projection_of_both_sides(
    tiny_bert: Path, beir_dir: Path, tmp_path: Path
) -> None:
    encoder = Encoder(str(tiny_bert), pooling="last-avg", device="cpu")
    dataset = load_beir(beir_dir)
    grid = RetrievalEval(
        datasets=[dataset],
        poolings=["last-avg"],
        transforms=[parse_transform("jl-8-s2")],
        cache_dir=tmp_path / "cache",
        top_k=10,
    )
    [result] = grid.run(encoder)
    projection = np.random.RandomState(2).normal(0, 1 / np.sqrt(8), (8, 32)).T
    passages = encoder.encode(dataset.corpus, text_type="passage", pooling="last-avg")
    queries = encoder.encode(dataset.queries, text_type="query", pooling="last-avg")
    passages, queries = (
        (x.astype(np.float64) @ projection).astype(np.float32) for x in (passages, queries)
    )
    scores = l2_normalize(queries) @ l2_normalize(passages).T
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    assert result.dim == 8
    assert result.metrics == pytest.approx(score_rankings(ranked, dataset.relevant, 10))


def test_a_symmetric_grid_encodes_the_corpus_as_queries(
    tiny_bert: Path, beir_dir: Path, tmp_path: Path
) -> None:
    spec = ModelSpec("tiny-e5", str(tiny_bert), query_prefix="query: ", passage_prefix="passage: ")
    encoder = Encoder(spec, pooling="last-avg", device="cpu")
    dataset = load_beir(beir_dir)
    grid = RetrievalEval(
        datasets=[dataset],
        poolings=["last-avg"],
        transforms=[parse_transform("none")],
        cache_dir=tmp_path / "cache",
        top_k=10,
        corpus_text_type="query",
    )
    [result] = grid.run(encoder)
    corpus = encoder.encode(dataset.corpus, text_type="query", pooling="last-avg")
    queries = encoder.encode(dataset.queries, text_type="query", pooling="last-avg")
    cache = VectorCache(tmp_path / "cache", encoder_spec(encoder, max_length=64), text_type="query")
    cached = cache.get(dataset.corpus, ["last-avg"], encode=not_called)["last-avg"]
    np.testing.assert_allclose(cached, corpus, atol=1e-5)
    scores = l2_normalize(queries) @ l2_normalize(corpus).T
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    assert result.metrics == pytest.approx(score_rankings(ranked, dataset.relevant, 10))


def test_cli_prints_a_row_per_transform_and_rerank(
    tiny_bert: Path, beir_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, [
        "eval-retrieval", "run", "--data-dir", str(beir_dir.parent), "--model", str(tiny_bert),
        "--pooling", "cls", "--whitening", "none,rot-16", "--rerank", "none,geodesic",
        "--top-k", "20", "--output", str(out), "--cache-dir", str(tmp_path / "c"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == (
        "| dataset | mode | model | backend | dtype | pooling | transform | rerank | dim | MRR@10 "
        "| R@1 | R@10 | R@20 | nDCG@10 | QPS | index bytes | graph bytes |"
    )
    assert {tuple(line.split(" | ")[3:5]) for line in lines[2:]} == {("torch", "float32")}
    rows = [line.split(" | ")[6:8] for line in lines[2:]]
    assert rows == [["none", "none"], ["none", "geodesic"], ["rot-16", "none"],
                    ["rot-16", "geodesic"]]  # fmt: skip
    records = json.loads(out.read_text())
    assert len(records) == 4 and set(records[0]["metrics"]) == {
        "MRR@10", "R@1", "R@10", "R@20", "nDCG@10",
    }  # fmt: skip


def test_cli_build_writes_one_beir_folder_per_task(tmp_path: Path) -> None:
    for name in ("AAA", "BBB"):
        (tmp_path / "sts" / name).mkdir(parents=True)
        (tmp_path / "sts" / name / f"{name}.test.data").write_text("a\tb\t1\nc\td\t0\n")
    result = CliRunner().invoke(cli, [
        "eval-retrieval", "build", "--data-dir", str(tmp_path / "sts"), "--tasks", "BBB",
        "--out", str(tmp_path / "out"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["BBB"]
    dataset = load_beir(tmp_path / "out" / "BBB")
    assert (dataset.queries, dataset.corpus, dataset.relevant) == (["a"], ["b", "d", "c"], [{0: 1}])
    assert "1 queries, 3 documents" in result.stderr


@pytest.mark.parametrize(
    "change,args,message",
    [("rm-corpus", [], "no corpus.jsonl here or in a sub-folder"),
     ("unknown-id", [], "test.tsv:11: corpus-id 'd999' is not in corpus.jsonl"),
     (None, ["--whitening", "none,bogus"], "unknown transform 'bogus'"),
     (None, ["--rerank", "isomap"], "unknown rerank 'isomap'"),
     (None, ["--top-k", "5"], "--top-k must be at least 10")],
)  # fmt: skip
def test_cli_bad_input_exits_1_with_one_line(
    tiny_bert: Path,
    beir_dir: Path,
    tmp_path: Path,
    change: str | None,
    args: list[str],
    message: str,
) -> None:
    if change == "rm-corpus":
        (beir_dir / "corpus.jsonl").unlink()
    if change == "unknown-id":
        with (beir_dir / "qrels" / "test.tsv").open("a") as handle:
            handle.write("\nq1\td999\t1")
    base = ["eval-retrieval", "run", "--data-dir", str(beir_dir.parent), "--model", str(tiny_bert)]
    result = CliRunner().invoke(cli, base + ["--cache-dir", str(tmp_path / "c"), *args])
    assert result.exit_code == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("baihua: error: ")


def test_build_without_a_matching_pair_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "T").mkdir()
    (tmp_path / "T" / "T.test.data").write_text("a\tb\t0\n")
    result = CliRunner().invoke(cli, [
        "eval-retrieval", "build", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"),
    ])  # fmt: skip
    assert result.exit_code == 1 and "no pair in test has label >= 1.0" in result.stderr
