"""`"mode": "dense" | "sparse" | "hybrid"` in POST /search, against a real server: the BM25 index
is kept in step by every write, filters apply to both sides, it survives restarts and is rebuilt
when out of step; without it (Milvus) sparse and hybrid are refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from baihua.app.main import create_app
from baihua.encoder import EmbeddingPipeline
from baihua.index import FaissStore
from baihua.serving.components import open_sparse
from baihua.serving.settings import Settings
from tests.app.conftest import StartServer, base_settings, running_server

DOCS = [
    {"id": 1, "text": "型号XK-7731的滤芯怎么更换", "payload": {"kind": "manual"}},
    {"id": 2, "text": "XK-7730 净化器说明书", "payload": {"kind": "manual"}},
    {"id": 3, "text": "花呗还款日期可以推迟吗", "payload": {"kind": "faq"}},
    {"id": 4, "text": "信用卡逾期一天有影响吗", "payload": {"kind": "faq"}},
]


def search(url: str, **body: object) -> list[dict]:
    response = httpx.post(f"{url}/search", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["results"]


@pytest.fixture
def url(start_server: StartServer, tmp_path: Path) -> str:
    url = start_server(data_dir=tmp_path / "data", search_mode="hybrid")
    response = httpx.post(f"{url}/documents", json={"documents": DOCS}, timeout=30)
    assert response.status_code == 201
    return url


def test_sparse_mode_finds_a_code_by_its_number(url: str) -> None:
    hits = search(url, query="7731", mode="sparse")
    assert [h["id"] for h in hits] == [1]
    assert hits[0]["sparse_rank"] == 1 and hits[0]["sparse_score"] == hits[0]["score"] > 0
    assert hits[0]["dense_rank"] is None and hits[0]["text"] == DOCS[0]["text"]


def test_hybrid_is_the_default_and_each_hit_says_both_sides(url: str) -> None:
    hits = search(url, query="XK-7731", top_k=4)
    assert hits[0]["id"] == 1
    assert hits[0]["sparse_rank"] == 1 and hits[0]["dense_rank"] is not None
    assert {h["id"] for h in hits} == {1, 2, 3, 4}  # the dense side returns every document
    rrf = search(url, query="XK-7731", top_k=4, fusion={"method": "rrf", "k": 60})
    for hit in rrf:
        expected = sum(1 / (60 + hit[r]) for r in ("dense_rank", "sparse_rank") if hit[r])
        assert hit["score"] == pytest.approx(expected)


def test_dense_mode_answers_as_before(url: str) -> None:
    hits = search(url, query="XK-7731", mode="dense", top_k=4)
    assert "sparse_rank" not in hits[0] and -1 <= hits[0]["score"] <= 1


def test_filters_apply_to_both_sides_before_fusion(url: str) -> None:
    for mode in ("sparse", "hybrid"):
        hits = search(url, query="XK-7731 花呗", mode=mode, top_k=4, filter={"kind": "faq"})
        assert hits and {h["payload"]["kind"] for h in hits} == {"faq"}
        assert hits[0]["id"] == 3


def test_every_write_reaches_the_sparse_index(url: str) -> None:
    httpx.post(f"{url}/documents/delete", json={"ids": [1]})
    assert search(url, query="7731", mode="sparse") == []
    upsert = {"documents": [{"id": 3, "text": "ZT-5000 说明书"}], "upsert": True}
    httpx.post(f"{url}/documents", json=upsert, timeout=30)
    assert [h["id"] for h in search(url, query="zt-5000", mode="sparse")] == [3]
    assert search(url, query="花呗", mode="sparse") == []
    httpx.post(f"{url}/documents/delete", json={"filter": {"kind": "manual"}})
    assert search(url, query="XK-7730", mode="sparse") == []
    httpx.patch(f"{url}/documents/4", json={"payload": {"kind": "other"}})
    assert [h["id"] for h in search(url, query="信用卡", mode="sparse")] == [4]


def test_a_restart_loads_the_saved_index_and_rebuilds_one_deleted_or_out_of_step(
    tiny_bert: Path, pipeline: EmbeddingPipeline, tmp_path: Path
) -> None:
    settings = base_settings(tiny_bert, data_dir=tmp_path, search_mode="hybrid")
    with running_server(create_app(settings, pipeline)) as url:
        httpx.post(f"{url}/documents", json={"documents": DOCS}, timeout=30)
        before = search(url, query="XK-7731", mode="sparse")  # merged on each write: exact
    saved = tmp_path / "sparse" / "sparse.json"
    assert saved.is_file()
    manifest = saved.read_text()
    with running_server(create_app(settings, pipeline)) as url:
        assert search(url, query="XK-7731", mode="sparse") == before
    assert saved.read_text() == manifest  # loaded, not rebuilt

    shutil.rmtree(tmp_path / "sparse")
    with running_server(create_app(settings, pipeline)) as url:
        assert search(url, query="XK-7731", mode="sparse") == before

    # the store written without the sparse index, as a kill -9 between the two would leave it
    dim = pipeline.dim
    with FaissStore.open(tmp_path / "index", dim) as store:
        store.upsert([9], np.full((1, dim), dim**-0.5, dtype=np.float32), ["QQ-8888 新产品"])
    with running_server(create_app(settings, pipeline)) as url:
        assert [h["id"] for h in search(url, query="8888", mode="sparse")] == [9]


def test_without_a_sparse_index_sparse_and_hybrid_are_refused(
    start_server: StartServer, tmp_path: Path
) -> None:
    url = start_server(data_dir=tmp_path / "d", sparse_index=False, search_mode="hybrid")
    for mode in ("sparse", "hybrid"):
        response = httpx.post(f"{url}/search", json={"query": "x", "mode": mode})
        assert response.status_code == 422
        assert "needs the BM25 index" in response.text and 'use \\"mode\\": \\"dense\\"' in (
            response.text
        )
    assert httpx.post(f"{url}/search", json={"query": "x"}).status_code == 200  # dense


def test_milvus_gets_no_sparse_index(tmp_path: Path) -> None:
    store = FaissStore(4)
    assert open_sparse(Settings(index_backend="milvus", data_dir=tmp_path), store) is None


def test_a_geodesic_rerank_reorders_the_dense_side_of_hybrid(url: str) -> None:
    hits = search(url, query="XK-7731", mode="hybrid", rerank="geodesic", top_k=4)
    assert {h["id"] for h in hits} == {1, 2, 3, 4} and hits[0]["sparse_rank"] == 1
