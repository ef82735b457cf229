"""`baihua index build`: a corpus into the service's persistent index, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from baihua.cli.main import cli
from baihua.encoder import encoder_spec
from baihua.jobs.index_build import IndexBuildJob
from baihua.serving.components import build_pipeline, open_store
from baihua.serving.settings import Settings
from baihua.whitening import Whitening

runner = CliRunner()


def settings_for(tiny_bert: Path, data_dir: Path) -> Settings:
    return Settings(model=str(tiny_bert), pooling="last-avg", data_dir=data_dir)


def write_jsonl(path: Path, n: int) -> Path:
    rows = [
        {"id": 100 + i, "text": f"hello {chr(97 + i % 26)} world {i}", "lang": "en"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_build_stores_ids_texts_and_payloads_searchable(tiny_bert: Path, tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "docs.jsonl", 12)
    data = tmp_path / "data"
    result = runner.invoke(
        cli, ["index", "build", "--input", str(corpus), "--data-dir", str(data),
              "--model", str(tiny_bert)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    settings = settings_for(tiny_bert, data)
    settings.pooling = None
    pipeline = build_pipeline(settings)
    with open_store(settings, pipeline) as store:
        assert store.ids().tolist() == list(range(100, 112))
        doc = store.get(105)
        assert doc is not None and doc.text == "hello f world 5" and doc.payload == {"lang": "en"}
        query = pipeline.embed(["hello f world 5"], text_type="passage").vectors
        assert store.search(query, top_k=1)[0][0].id == 105


def progress(settings: Settings) -> Path:
    return settings.data_dir / "index" / "build-progress.json"


def test_plain_corpus_gets_positions_as_ids(tiny_bert: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello\n\nworld\nbert\n")
    settings = settings_for(tiny_bert, tmp_path / "data")
    pipeline = build_pipeline(settings)
    with open_store(settings, pipeline) as store:
        assert IndexBuildJob(corpus, store, pipeline, progress(settings)).run() == 3
        assert [store.get(i).text for i in range(3)] == ["hello", "world", "bert"]  # type: ignore[union-attr]


def test_interrupted_build_resumes_without_duplicates(tiny_bert: Path, tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "docs.jsonl", 10)
    settings = settings_for(tiny_bert, tmp_path / "data")
    pipeline = build_pipeline(settings)
    seen = 0

    def interrupt(n: int) -> None:
        nonlocal seen
        seen += n
        if seen > 4:
            raise KeyboardInterrupt

    with open_store(settings, pipeline) as store, pytest.raises(KeyboardInterrupt):
        IndexBuildJob(corpus, store, pipeline, progress(settings), chunk_size=4).run(
            progress=interrupt
        )
    with open_store(settings, pipeline) as store:
        job = IndexBuildJob(corpus, store, pipeline, progress(settings), chunk_size=4)
        assert job.done() == 4 and len(store) == 4
        job.run()
        assert store.ids().tolist() == list(range(100, 110))
        fresh = pipeline.embed([store.get(109).text], text_type="passage").vectors  # type: ignore[union-attr]
        np.testing.assert_allclose(store.vectors([109]), fresh, atol=1e-6)


def test_build_resumed_with_another_whitening_of_the_same_k_is_refused(
    tiny_bert: Path, tmp_path: Path
) -> None:
    corpus = write_jsonl(tmp_path / "docs.jsonl", 10)
    texts = [f"hello {w} world" for w in "abcdefghijklmnopqrstuvwxyz"]
    for name, shift in (("w1", 0), ("w2", 13)):
        encoder = build_pipeline(settings_for(tiny_bert, tmp_path)).encoder
        whitening = Whitening(8).fit(encoder.encode(texts[shift:] + texts[:shift])[:20])
        whitening.save_pretrained(tmp_path / name, spec=encoder_spec(encoder))
    first = settings_for(tiny_bert, tmp_path / "data")
    first.whitening = tmp_path / "w1"
    pipeline = build_pipeline(first)
    seen = 0

    def interrupt(n: int) -> None:
        nonlocal seen
        seen += n
        if seen > 4:
            raise KeyboardInterrupt

    with open_store(first, pipeline) as store, pytest.raises(KeyboardInterrupt):
        IndexBuildJob(corpus, store, pipeline, progress(first), chunk_size=4).run(
            progress=interrupt
        )
    result = runner.invoke(
        cli, ["index", "build", "--input", str(corpus), "--data-dir", str(tmp_path / "data"),
              "--model", str(tiny_bert), "--whitening", str(tmp_path / "w2")],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "another vector space (transform '" in result.stderr
    assert "baihua index reembed" in result.stderr


def test_bad_id_names_file_and_line(tiny_bert: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text('{"id": 1, "text": "a"}\n{"id": "x", "text": "b"}\n')
    result = runner.invoke(
        cli, ["index", "build", "--input", str(corpus), "--data-dir", str(tmp_path / "d"),
              "--model", str(tiny_bert)],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "docs.jsonl:2: id must be a non-negative integer" in result.stderr


def test_build_into_milvus_is_the_same_command(tiny_bert: Path, tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "docs.jsonl", 12)
    data = tmp_path / "data"
    env = {"BAIHUA_INDEX_BACKEND": "milvus", "BAIHUA_MILVUS_COLLECTION": "built"}
    result = runner.invoke(
        cli, ["index", "build", "--input", str(corpus), "--data-dir", str(data),
              "--model", str(tiny_bert)], env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    settings = Settings(
        model=str(tiny_bert),
        pooling="last-avg",
        data_dir=data,
        index_backend="milvus",
        milvus_collection="built",
    )
    pipeline = build_pipeline(settings)
    with open_store(settings, pipeline) as store:
        assert store.ids().tolist() == list(range(100, 112))
        doc = store.get(105)
        assert doc is not None and doc.payload == {"lang": "en"}
        query = pipeline.embed(["hello f world 5"], text_type="passage").vectors
        assert store.search(query, top_k=1)[0][0].id == 105


def test_an_unusable_index_factory_is_one_line_and_exit_code_1(
    tiny_bert: Path, tmp_path: Path
) -> None:
    corpus = write_jsonl(tmp_path / "docs.jsonl", 3)
    result = runner.invoke(
        cli, ["index", "build", "--input", str(corpus), "--data-dir", str(tmp_path / "d"),
              "--model", str(tiny_bert)], env={"BAIHUA_INDEX_FACTORY": "Bogus"},
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "baihua: error: index_factory (BAIHUA_INDEX_FACTORY): FAISS cannot build factory 'Bogus'"
    )
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_unusable_index_search_params_are_one_line_and_exit_code_1(
    tiny_bert: Path, tmp_path: Path
) -> None:
    corpus = write_jsonl(tmp_path / "docs.jsonl", 3)
    result = runner.invoke(
        cli, ["index", "build", "--input", str(corpus), "--data-dir", str(tmp_path / "d"),
              "--model", str(tiny_bert)],
        env={"BAIHUA_INDEX_FACTORY": "HNSW16", "BAIHUA_INDEX_SEARCH_PARAMS": "efSearch=0"},
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr == (
        "baihua: error: index_search_params (BAIHUA_INDEX_SEARCH_PARAMS): FAISS search "
        "parameters 'efSearch=0': efSearch must be a whole number from 1 to 2147483647, got 0\n"
    )
