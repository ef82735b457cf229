"""The playground's search modes in a real headless Chromium against the real server: dense,
sparse (BM25) and hybrid answer as /search does, hits show each side's rank and score, and
where the server has no BM25 index (Milvus) the choice is disabled with the server's reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.conftest import StartServer
from tests.app.test_ui import KEY, Page, browser

__all__ = ["browser"]  # the module-scoped Chromium fixture, shared with test_ui

HEADERS = {"Authorization": f"Bearer {KEY}"}
DOCS = [
    {"text": "型号XK-7731的滤芯怎么更换", "payload": {"kind": "manual"}},
    {"text": "XK-7730 净化器说明书", "payload": {"kind": "manual"}},
    {"text": "花呗还款日期可以推迟吗", "payload": {"kind": "faq"}},
    {"text": "信用卡逾期一天有影响吗", "payload": {"kind": "faq"}},
    {"text": "空气净化器的滤芯多久换一次", "payload": {"kind": "faq"}},
    {"text": "hello world", "payload": {}},
]


def answer(url: str, **body: Any) -> list[dict[str, Any]]:
    response = httpx.post(f"{url}/search", json=body, headers=HEADERS, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["results"]


@pytest.fixture
def url(start_server: StartServer) -> str:
    url = start_server(api_key=KEY)
    httpx.post(
        f"{url}/documents", json={"documents": DOCS}, headers=HEADERS, timeout=30
    ).raise_for_status()
    return url


@pytest.fixture
def page(browser: Any, url: str) -> Iterator[Page]:
    page = Page(browser, url)
    page.set_key(KEY)
    yield page
    page.context.close()


def shown(page: Page) -> list[dict[str, str]]:
    """Each result row's cells by column."""
    names = ("id", "score", "dense-rank", "dense-score", "sparse-rank", "sparse-score")
    columns = {name: page.column(name) for name in names}
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def side(value: float | int | None, digits: int | None = None) -> str:
    if value is None:
        return "—"
    return str(value) if digits is None else f"{value:.{digits}f}"


def test_switching_modes_changes_the_results_as_the_server_ranks_them(page: Page, url: str) -> None:
    page.search("XK-7731", top_k=5, mode="sparse")
    sparse = answer(url, query="XK-7731", top_k=5, mode="sparse")
    assert page.column("text")[0] == "型号XK-7731的滤芯怎么更换"  # the exact code, first
    assert [row["id"] for row in shown(page)] == [str(h["id"]) for h in sparse]
    for row, hit in zip(shown(page), sparse, strict=True):
        assert (row["sparse-rank"], row["dense-rank"]) == (str(hit["sparse_rank"]), "—")
        assert float(row["score"]) == pytest.approx(hit["score"], abs=1e-4)
        assert row["sparse-score"] == row["score"]
    assert page.page.inner_text("#score-head") == "BM25"
    assert page.page.locator("#results th.ranks").first.is_visible()
    assert page.page.inner_text("#search-status").endswith("(sparse)")
    sparse_texts = page.column("text")

    page.search("XK-7731", top_k=5, mode="dense")
    dense = answer(url, query="XK-7731", top_k=5, mode="dense")
    assert page.column("id") == [str(h["id"]) for h in dense]
    assert page.column("text") != sparse_texts  # BM25 returns only the documents with a term
    assert page.page.locator("#results th.ranks").first.is_hidden()
    assert page.page.inner_text("#score-head") == "cosine"


@pytest.mark.parametrize(
    "fusion", [{"method": "weighted", "weight": 0.3}, {"method": "rrf", "k": 10}]
)
def test_hybrid_shows_the_fused_ranking_and_each_sides_rank_and_score(
    page: Page, url: str, fusion: dict[str, Any]
) -> None:
    page.search("XK-7731 滤芯", top_k=6, mode="hybrid", fusion=fusion)
    hybrid = answer(url, query="XK-7731 滤芯", top_k=6, mode="hybrid", fusion=fusion)
    rows = shown(page)
    assert [row["id"] for row in rows] == [str(h["id"]) for h in hybrid]
    for row, hit in zip(rows, hybrid, strict=True):
        assert float(row["score"]) == pytest.approx(hit["score"], abs=1e-4)
        assert row["dense-rank"] == side(hit["dense_rank"])
        assert row["sparse-rank"] == side(hit["sparse_rank"])
        assert row["dense-score"] == side(hit["dense_score"], 4)
        assert row["sparse-score"] == side(hit["sparse_score"], 4)
    assert any(row["sparse-rank"] == "—" for row in rows)  # a document without the terms
    if fusion["method"] == "rrf":
        for row in rows:
            ranks = [int(r) for r in (row["dense-rank"], row["sparse-rank"]) if r != "—"]
            assert float(row["score"]) == pytest.approx(sum(1 / (10 + r) for r in ranks), abs=1e-4)
    assert page.page.inner_text("#score-head") == "fused score"
    name = "weighted 0.3" if fusion["method"] == "weighted" else "RRF k=10"
    assert page.page.inner_text("#search-status").endswith(f"(hybrid, {name})")


def test_the_fusion_choice_shows_only_in_hybrid_mode(page: Page) -> None:
    page.page.select_option("#mode", "hybrid")
    assert page.page.locator("#fusion").is_visible()
    page.page.select_option("#fusion", "rrf")
    assert page.page.locator("#rrf-k").is_visible() and page.page.locator("#weight").is_hidden()
    page.page.select_option("#mode", "dense")
    assert page.page.locator("#fusion").is_hidden()


def test_raw_cosine_rescoring_needs_the_dense_mode(page: Page) -> None:
    page.page.uncheck("#whiten")
    page.search("XK-7731", mode="hybrid")
    assert "choose the dense mode" in page.error("search")


def test_without_a_bm25_index_sparse_and_hybrid_are_disabled_with_the_servers_reason(
    browser: Any, start_server: StartServer, tmp_path: Path
) -> None:
    url = start_server(
        api_key=KEY, index_backend="milvus", milvus_uri=str(tmp_path / "m" / "milvus.db")
    )
    httpx.post(
        f"{url}/documents", json={"documents": DOCS}, headers=HEADERS, timeout=60
    ).raise_for_status()
    refused = httpx.post(
        f"{url}/search", json={"query": "x", "mode": "sparse"}, headers=HEADERS, timeout=30
    )
    assert refused.status_code == 422
    reason = refused.json()["detail"][0]["msg"]
    page = Page(browser, url)
    try:
        page.set_key(KEY)
        page.page.wait_for_function(
            "() => document.querySelector('#mode option[value=sparse]').disabled"
        )
        assert page.page.locator("#mode option[value=hybrid]").is_disabled()
        assert page.page.input_value("#mode") == "dense"
        note = page.page.inner_text("#mode-note")
        assert note.startswith("sparse and hybrid search are not available here: 422")
        assert reason in note
        page.search("花呗", top_k=3, mode="dense")
        assert page.column("id") == [
            str(h["id"]) for h in answer(url, query="花呗", top_k=3, mode="dense")
        ]
    finally:
        page.context.close()
