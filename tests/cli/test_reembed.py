"""`baihua index reembed`: the stored documents re-encoded into another space, resumable, switched
in atomically while the old index stays usable until then."""

from __future__ import annotations

import json
import os
from pathlib import Path

import faiss
import numpy as np
import pytest
from typer.testing import CliRunner

from baihua.cli.main import cli
from baihua.core.errors import UsageError
from baihua.core.spec import SpecMismatchError
from baihua.encoder import EmbeddingPipeline, encoder_spec
from baihua.index import FaissStore
from baihua.jobs.index_build import IndexBuildJob
from baihua.jobs.reembed import ReembedJob, ReembedPendingError
from baihua.serving.components import build_pipeline, open_store
from baihua.serving.settings import Settings
from baihua.whitening import Whitening
from tests.conftest import build_tiny_bert

TEXTS = [f"hello {w} world {i} bert" for i, w in enumerate("abcdefghijklmnopqrstuvwxyz")]


def settings_for(model: Path, data_dir: Path, whitening: Path | None = None) -> Settings:
    return Settings(
        model=str(model), pooling="last-avg", device="cpu", data_dir=data_dir, whitening=whitening
    )


@pytest.fixture(scope="module")
def other_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("other-bert"), seed=1)


@pytest.fixture
def data(tiny_bert: Path, tmp_path: Path) -> Path:
    """An index of TEXTS (ids 100…, payloads) built with the tiny BERT's raw vectors."""
    corpus = tmp_path / "docs.jsonl"
    rows = [{"id": 100 + i, "text": t, "payload": {"i": i}} for i, t in enumerate(TEXTS)]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = settings_for(tiny_bert, tmp_path / "data")
    pipeline = build_pipeline(settings)
    with open_store(settings, pipeline) as store:
        IndexBuildJob(corpus, store, pipeline, tmp_path / "progress.json").run()
    return tmp_path / "data"


@pytest.fixture
def whitened(tiny_bert: Path, tmp_path: Path) -> Path:
    """A k=8 whitening artifact for the tiny BERT."""
    pipeline = build_pipeline(settings_for(tiny_bert, tmp_path))
    path = tmp_path / "w8"
    Whitening(8).fit(pipeline.encoder.encode(TEXTS)).save_pretrained(
        path, spec=encoder_spec(pipeline.encoder)
    )
    return path


def assert_in_space(data: Path, pipeline: EmbeddingPipeline) -> None:
    """The index holds every text as a passage vector of `pipeline`, and a query finds it."""
    with FaissStore.open(data / "index", dim=pipeline.dim, spec=pipeline.spec) as store:
        assert store.spec == pipeline.spec
        assert store.ids().tolist() == [100 + i for i in range(len(TEXTS))]
        expected = pipeline.embed(TEXTS, text_type="passage").vectors
        np.testing.assert_allclose(store.vectors(store.ids()), expected, atol=1e-5)
        query = pipeline.embed([TEXTS[7]], text_type="query").vectors
        hit = store.search(query, top_k=1)[0][0]
        assert (hit.id, hit.text, hit.payload) == (107, TEXTS[7], {"i": 7})


def test_cli_reembeds_into_a_new_model_and_switches(
    data: Path, tiny_bert: Path, other_bert: Path, whitened: Path
) -> None:
    old = build_pipeline(settings_for(tiny_bert, data))
    args = ["index", "reembed", "--data-dir", str(data), "--model", str(other_bert)]
    result = CliRunner().invoke(cli, [*args, "--pooling", "last-avg"])
    assert result.exit_code == 0, result.output
    assert f"{data / 'index'}: {len(TEXTS)} documents" in result.stderr
    new = build_pipeline(settings_for(other_bert, data))
    assert_in_space(data, new)
    with FaissStore.open(data / "index.previous", dim=old.dim) as previous:
        assert previous.spec == old.spec
    assert sorted(p.name for p in data.iterdir()) == ["index", "index.previous"]
    with pytest.raises(SpecMismatchError, match="weights"):
        open_store(settings_for(tiny_bert, data), old)


def test_an_interrupted_reembed_resumes_where_it_stopped(
    data: Path, tiny_bert: Path, whitened: Path
) -> None:
    new = build_pipeline(settings_for(tiny_bert, data, whitened))
    job = ReembedJob(data, new, chunk_size=4)
    seen = 0

    def interrupt_in_third_chunk(n: int) -> None:
        nonlocal seen
        seen += n
        if seen > 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        job.run(progress=interrupt_in_third_chunk)
    assert job.done() == 8 and job.total() == len(TEXTS)
    old = build_pipeline(settings_for(tiny_bert, data))
    with open_store(settings_for(tiny_bert, data), old) as store:  # untouched meanwhile
        assert len(store) == len(TEXTS) and store.spec == old.spec
    encoded: list[int] = []
    assert job.run(progress=encoded.append) == len(TEXTS)
    assert sum(encoded) == len(TEXTS) - 8
    assert_in_space(data, new)


def test_the_old_index_serves_until_the_switch_which_catches_up_on_its_writes(
    data: Path, tiny_bert: Path, whitened: Path
) -> None:
    old_settings = settings_for(tiny_bert, data)
    old = build_pipeline(old_settings)
    new = build_pipeline(settings_for(tiny_bert, data, whitened))
    job = ReembedJob(data, new, chunk_size=8)
    with open_store(old_settings, old) as serving:  # holds the index, as a server does
        with pytest.raises(ReembedPendingError, match="stop it and rerun"):
            job.run()
        hit = serving.search(old.embed([TEXTS[3]]).vectors, top_k=1)[0][0]
        assert hit.id == 103
        added = "a new document 的"
        serving.upsert([500], old.embed([added], text_type="passage").vectors, [added], [{}])
        serving.delete([100])
        serving.upsert([101], old.embed(["changed"]).vectors, ["changed"], [{"i": 1}])
    assert job.run() == len(TEXTS)
    with FaissStore.open(data / "index", dim=new.dim, spec=new.spec) as store:
        assert 100 not in store.ids().tolist() and 500 in store.ids().tolist()
        for id, text in ((500, added), (101, "changed"), (102, TEXTS[2])):
            expected = new.embed([text], text_type="passage").vectors
            np.testing.assert_allclose(store.vectors([id]), expected, atol=1e-5)


def test_a_reembed_resumed_towards_another_space_is_refused(
    data: Path, tiny_bert: Path, other_bert: Path, whitened: Path
) -> None:
    new = build_pipeline(settings_for(tiny_bert, data, whitened))
    seen = 0

    def interrupt_in_second_chunk(n: int) -> None:
        nonlocal seen
        seen += n
        if seen > 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ReembedJob(data, new, chunk_size=4).run(progress=interrupt_in_second_chunk)
    other = build_pipeline(settings_for(other_bert, data))
    with pytest.raises(SpecMismatchError, match="reembed-progress.json was made in another"):
        ReembedJob(data, other).run()


def test_a_switch_stopped_halfway_is_finished_by_a_rerun(
    data: Path, tiny_bert: Path, whitened: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = build_pipeline(settings_for(tiny_bert, data, whitened))
    real_rename = os.rename

    def crash_after_the_exchange(src: str | Path, dst: str | Path) -> None:
        if Path(dst).name == "index.previous":
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", crash_after_the_exchange)
    with pytest.raises(KeyboardInterrupt):
        ReembedJob(data, new).run()
    monkeypatch.undo()
    assert ReembedJob(data, new).run() == len(TEXTS)
    assert_in_space(data, new)
    assert sorted(p.name for p in data.iterdir()) == ["index", "index.previous"]


def test_reembedding_into_the_same_space_or_without_an_index_says_so(
    data: Path, tiny_bert: Path, tmp_path: Path
) -> None:
    same = build_pipeline(settings_for(tiny_bert, data))
    with pytest.raises(UsageError, match="already in this space"):
        ReembedJob(data, same).run()
    with pytest.raises(UsageError, match="no index at"):
        ReembedJob(tmp_path / "empty", same).run()


def test_reembed_builds_the_new_index_with_the_index_settings(
    data: Path, tiny_bert: Path, other_bert: Path
) -> None:
    args = ["index", "reembed", "--data-dir", str(data), "--model", str(other_bert)]
    env = {"BAIHUA_INDEX_FACTORY": "HNSW16", "BAIHUA_INDEX_SEARCH_PARAMS": "efConstruction=40"}
    result = CliRunner(env=env).invoke(cli, [*args, "--pooling", "last-avg"])
    assert result.exit_code == 0, result.output
    (snapshot,) = (data / "index").glob("index-*.faiss")  # FAISS keeps efConstruction in it
    assert faiss.downcast_index(faiss.read_index(str(snapshot))).hnsw.efConstruction == 40

    env["BAIHUA_INDEX_SEARCH_PARAMS"] = "nprobe=16"  # back to tiny_bert: a new target again
    args = ["index", "reembed", "--data-dir", str(data), "--model", str(tiny_bert)]
    result = CliRunner(env=env).invoke(cli, [*args, "--pooling", "last-avg"])
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "baihua: error: index_search_params (BAIHUA_INDEX_SEARCH_PARAMS): FAISS search "
        "parameters 'nprobe=16' do not fit 'HNSW16', which has no parameter 'nprobe'"
    )
    assert result.stderr.count("\n") == 1
