"""The batch jobs on a local Ray (2 CPUs, started and stopped here): moments merged from Ray
blocks equal the single-process ones, and bulk indexing fills FAISS (through the driver) and
Milvus (from the workers) with the same documents."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from baihua.encoder.corpus import count_sentences, iter_corpus
from baihua.jobs.index_build import corpus_documents
from baihua.jobs.ray import (
    RayOptions,
    ray_index_build,
    ray_moments,
    ray_session,
    worker_store_uri,
)
from baihua.serving.components import build_encoder, build_pipeline, open_store
from baihua.serving.settings import Settings
from baihua.whitening import Moments

OPTIONS = RayOptions(num_cpus=2, actors=2, threads_per_actor=1, block_size=64)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with ray_session(OPTIONS):
        yield


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    rows = [
        {"id": 10 + i, "text": f"第{i}句 hello {'world ' * (i % 7)}{i}", "payload": {"g": i % 3}}
        for i in range(300)
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def settings_for(tiny_bert: Path, tmp_path: Path, **overrides: object) -> Settings:
    return Settings(
        model=str(tiny_bert),
        pooling="last-avg",
        device="cpu",
        num_threads=1,
        data_dir=tmp_path / "data",
        **overrides,  # type: ignore[arg-type]
    )


def test_moments_from_ray_blocks_equal_the_single_process_moments(
    local_ray: None, tiny_bert: Path, tmp_path: Path, corpus: Path
) -> None:
    settings = settings_for(tiny_bert, tmp_path)
    total = count_sentences(corpus)
    seen: list[int] = []

    merged = ray_moments(settings, corpus, total, OPTIONS, progress=seen.append)

    encoder = build_encoder(settings)
    local = Moments.empty(encoder.dim)
    sentences = iter_corpus(corpus)
    while chunk := list(itertools.islice(sentences, 64)):  # the local job's chunks
        local.update(encoder.encode(chunk))
    assert merged.n == local.n == total == sum(seen)
    for ours, theirs in ((merged.sum, local.sum), (merged.sum_outer, local.sum_outer)):
        assert np.abs(ours - theirs).max() <= 1e-9 * np.abs(theirs).max()


def test_ray_index_build_writes_faiss_through_the_driver_and_milvus_from_the_workers(
    local_ray: None, tiny_bert: Path, tmp_path: Path, corpus: Path
) -> None:
    total = count_sentences(corpus)
    faiss_settings = settings_for(tiny_bert, tmp_path)
    milvus_settings = settings_for(
        tiny_bert, tmp_path, index_backend="milvus", milvus_uri=str(tmp_path / "m" / "m.db")
    )
    pipeline = build_pipeline(faiss_settings)
    documents = list(corpus_documents(corpus))
    queries = pipeline.embed([documents[5][1], documents[200][1]], text_type="passage").vectors

    with open_store(faiss_settings, pipeline) as faiss_store:
        assert (
            ray_index_build(faiss_store, faiss_settings, corpus, total, OPTIONS, worker_uri=None)
            == 300
        )
        faiss_hits = faiss_store.search(queries, 5, filter={"g": {"$in": [0, 2]}})
    with open_store(milvus_settings, pipeline) as milvus_store:
        worker_uri = milvus_store.worker_uri  # type: ignore[attr-defined]
        assert worker_uri.startswith("unix:")
        built = ray_index_build(
            milvus_store, milvus_settings, corpus, total, OPTIONS, worker_uri=worker_uri
        )
        assert built == 300
        assert milvus_store.ids().tolist() == [d[0] for d in documents]
        assert milvus_store.get(15).payload == {"g": 2}  # type: ignore[union-attr]
        milvus_hits = milvus_store.search(queries, 5, filter={"g": {"$in": [0, 2]}})

    for ours, theirs in zip(milvus_hits, faiss_hits, strict=True):
        np.testing.assert_allclose([h.score for h in ours], [h.score for h in theirs], atol=1e-5)
        # documents tied with the 5th (the tiny model scores many alike) may swap places
        cutoff = theirs[-1].score + 1e-5
        assert {h.id for h in ours if h.score > cutoff} == {
            h.id for h in theirs if h.score > cutoff
        }
    assert milvus_hits[0][0].id == documents[5][0]


def test_workers_write_to_milvus_through_its_socket_and_to_faiss_through_the_driver(
    tiny_bert: Path, tmp_path: Path
) -> None:
    faiss_settings = settings_for(tiny_bert, tmp_path)
    milvus_settings = settings_for(
        tiny_bert, tmp_path, index_backend="milvus", milvus_uri=str(tmp_path / "m" / "m.db")
    )
    pipeline = build_pipeline(faiss_settings)

    with open_store(faiss_settings, pipeline) as faiss_store:
        assert worker_store_uri(faiss_settings, faiss_store) is None
    with open_store(milvus_settings, pipeline) as milvus_store:
        uri = worker_store_uri(milvus_settings, milvus_store)
    assert uri is not None and uri.startswith("unix:")  # the embedded engine's server
