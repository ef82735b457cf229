"""The playground page at /ui/ in a real headless Chromium (Debian's `chromium`, driven by
playwright) against the real server.

The tiny random BERT checks the page against in-process results; one slow test does the same on
the real me5-small and, with BAIHUA_UI_SCREENSHOTS set to a folder, saves the screenshots there
(`make screenshots` writes docs/ui-*.png).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from baihua.encoder import EmbeddingPipeline, Encoder
from baihua.whitening import Whitening
from tests.app.conftest import StartServer, embed_in_process
from tests.conftest import WHITENED_DIM

CHROMIUM = os.environ.get("BAIHUA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = os.environ.get("BAIHUA_UI_SCREENSHOTS")
KEY = "test-key"
DOCS = [
    {"text": "hello world", "payload": {"lang": "en"}},
    {"text": "我在中国", "payload": {"lang": "zh"}},
    {"text": "bert is a model", "payload": {"lang": "en"}},
    {"text": "他是大人", "payload": {"lang": "zh", "n": 4}},
    {"text": "这不是我的", "payload": {"lang": "zh"}},
    {"text": "the world of bert", "payload": {}},
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'"
    )
    if not Path(CHROMIUM).is_file():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (Debian), or set "
            "BAIHUA_CHROMIUM to a Chromium executable"
        )
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: Chromium's sandbox refuses to run as root, which CI is
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


class Page:
    """The playground in a fresh browser tab, with every URL it requested."""

    def __init__(self, browser: Any, url: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 860})
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.requested: list[str] = []
        self.page.on("request", lambda request: self.requested.append(request.url))
        self.page.goto(f"{url}/ui")

    def set_key(self, key: str) -> None:
        self.page.fill("#api-key", key)
        self.page.press("#api-key", "Tab")  # leaving the field stores the key

    def search(
        self,
        query: str,
        *,
        top_k: int = 10,
        mode: str = "dense",
        fusion: dict[str, Any] | None = None,
    ) -> None:
        """Search in ``mode`` (dense unless said: most tests check cosines); ``fusion`` as
        /search takes it, for hybrid."""
        self.page.fill("#query", query)
        self.page.fill("#top-k", str(top_k))
        self.page.select_option("#mode", mode)
        if fusion is not None:
            self.page.select_option("#fusion", fusion["method"])
            if "weight" in fusion:
                self.page.fill("#weight", str(fusion["weight"]))
            if "k" in fusion:
                self.page.fill("#rrf-k", str(fusion["k"]))
        self.page.click("#search-form button")
        self.page.wait_for_function("() => !document.querySelector('#search-form button').disabled")

    def column(self, name: str) -> list[str]:
        return self.page.locator(f"#results tbody td.{name}").all_inner_texts()

    def error(self, panel: str) -> str:
        error = self.page.locator(f"#{panel}-error")
        error.wait_for(state="visible")
        return error.inner_text()

    def screenshot(self, name: str) -> None:
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(SCREENSHOTS) / name), full_page=True)


@pytest.fixture
def url(start_server: StartServer) -> str:
    url = start_server(api_key=KEY)
    headers = {"Authorization": f"Bearer {KEY}"}
    httpx.post(f"{url}/documents", json={"documents": DOCS}, headers=headers).raise_for_status()
    return url


@pytest.fixture
def page(browser: Any, url: str) -> Iterator[Page]:
    page = Page(browser, url)
    page.set_key(KEY)
    yield page
    page.context.close()


def ranked(pipeline: EmbeddingPipeline, query: str, texts: list[str], **options: Any) -> list:
    """(cosine, text) best first, computed in this process, not by the server."""
    q = embed_in_process(pipeline, [query], text_type="query", **options)[0]
    d = embed_in_process(pipeline, texts, text_type="passage", **options)
    return sorted(zip((d @ q).tolist(), texts, strict=True), reverse=True)


def test_the_page_loads_and_shows_the_service_info(page: Page, pipeline: EmbeddingPipeline) -> None:
    assert page.page.title() == "baihua playground"
    assert page.page.url.endswith("/ui/")
    page.page.wait_for_function("() => document.querySelectorAll('#info dt').length > 1")
    info = dict(
        zip(
            page.page.locator("#info dt").all_inner_texts(),
            page.page.locator("#info dd").all_inner_texts(),
            strict=True,
        )
    )
    assert info["status"] == "ready"
    assert info["model"] == pipeline.encoder.name
    assert (info["dim"], info["encoder_dim"]) == (str(WHITENED_DIM), "32")
    assert f"n_components={WHITENED_DIM}" in info["whitening"]


def test_a_query_shows_the_nearest_documents_with_scores_and_payloads(
    page: Page, pipeline: EmbeddingPipeline
) -> None:
    expected = ranked(pipeline, "hello bert", [d["text"] for d in DOCS])[:3]
    page.search("hello bert", top_k=3)
    assert page.column("text") == [text for _, text in expected]
    np.testing.assert_allclose(
        [float(s) for s in page.column("score")], [s for s, _ in expected], atol=1e-4
    )
    payloads = {d["text"]: d["payload"] for d in DOCS}
    assert page.column("payload")[0] == (
        _json(payloads[expected[0][1]]) if payloads[expected[0][1]] else ""
    )
    assert page.page.inner_text("#search-status").startswith("3 results in ")


def _json(payload: dict[str, Any]) -> str:
    import json

    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def test_a_document_added_through_the_page_is_then_found(
    page: Page, pipeline: EmbeddingPipeline
) -> None:
    page.page.fill("#documents", "一是一 hello\n\n在这里 bert")
    page.page.fill("#payload", '{"source": "page"}')
    page.page.click("#add-form button")
    status = page.page.locator("#add-status")
    status.wait_for(state="visible")
    page.page.wait_for_function("() => document.querySelector('#add-status').textContent")
    assert status.inner_text() == "added 2 documents: id 6, 7"
    texts = [d["text"] for d in DOCS] + ["一是一 hello", "在这里 bert"]
    page.search("一是一 hello", top_k=len(texts))
    assert page.column("text") == [text for _, text in ranked(pipeline, "一是一 hello", texts)]
    found = page.column("text").index("一是一 hello")
    assert page.column("payload")[found] == '{"source":"page"}'


def test_a_wrong_api_key_is_shown_and_no_stale_results(page: Page) -> None:
    page.search("hello")
    assert page.page.locator("#results").is_visible()
    page.set_key("wrong-key")
    page.search("hello")
    message = page.error("search")
    assert message.startswith("401")
    assert "API key" in message
    assert page.page.locator("#results").is_hidden()


def test_server_validation_errors_name_the_field(page: Page) -> None:
    page.search("   ")
    assert page.error("search").startswith("422")
    message = page.error("search")
    assert "query: must not be empty" in message
    assert message.count("query") == 1  # the field once: the server's message names it


def test_whitening_off_rescores_the_candidates_by_raw_cosine(
    page: Page, pipeline: EmbeddingPipeline
) -> None:
    page.page.uncheck("#whiten")
    page.search("我在中国", top_k=4)
    raw = ranked(pipeline, "我在中国", [d["text"] for d in DOCS], whiten=False)[:4]
    assert page.column("text") == [text for _, text in raw]
    np.testing.assert_allclose(
        [float(s) for s in page.column("raw")], [s for s, _ in raw], atol=1e-4
    )
    assert page.page.locator("#results th.raw").is_visible()


def test_geodesic_reranking_with_whitening_off_is_refused(page: Page) -> None:
    page.page.uncheck("#whiten")
    page.page.check("#rerank")
    page.search("hello")
    assert "turn whitening on" in page.error("search")


def test_geodesic_reranking_shows_the_servers_order_and_distances(page: Page, url: str) -> None:
    answer = settled_geodesic_answer(url, "hello world", top_k=3)
    page.page.check("#rerank")
    page.search("hello world", top_k=3)
    assert page.column("id") == [str(hit["id"]) for hit in answer]
    assert [float(g) for g in page.column("geodesic")] == pytest.approx(
        [hit["geodesic"] for hit in answer], abs=1e-4
    )


def settled_geodesic_answer(url: str, query: str, top_k: int) -> list[dict[str, Any]]:
    """The server's geodesic hits once its kNN graph (built in the background after writes)
    gives the same answer twice in a row."""
    body = {"query": query, "top_k": top_k, "rerank": "geodesic"}
    headers = {"Authorization": f"Bearer {KEY}"}
    previous = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = httpx.post(f"{url}/search", json=body, headers=headers).json()["results"]
        if answer == previous:
            return answer
        previous = answer
        time.sleep(0.2)
    raise TimeoutError("the geodesic answer did not settle")


def test_compare_shows_raw_and_whitened_cosines(page: Page, pipeline: EmbeddingPipeline) -> None:
    page.page.fill("#text-a", "hello world")
    page.page.fill("#text-b", "我在中国")
    page.page.click("#compare-form button")
    page.page.locator("#compare").wait_for(state="visible")
    for name, whiten, dim in (("raw", False, 32), ("whitened", True, WHITENED_DIM)):
        a, b = embed_in_process(pipeline, ["hello world", "我在中国"], whiten=whiten)
        shown = page.page.inner_text(f"#cos-{name}")
        assert float(shown.split()[0]) == pytest.approx(float(a @ b), abs=1e-4)
        assert f"({dim} dims)" in shown


def test_the_page_requests_nothing_from_elsewhere(page: Page, url: str) -> None:
    page.search("hello")
    page.page.click("#compare-form button")
    page.page.locator("#compare").wait_for(state="visible")
    assert page.requested
    assert [u for u in page.requested if not u.startswith(url + "/")] == []


FAQ = [
    ("花呗怎么开通", "花呗"),
    ("借呗的利息是多少", "借呗"),
    ("信用卡逾期了怎么办", "信用卡"),
    ("我想办信用卡", "信用卡"),
    ("如何修改登录密码", "账户"),
    ("怎么查询账户余额", "账户"),
    ("退款多久能到账", "订单"),
    ("订单付款后还能取消吗", "订单"),
    ("今天天气很好", "闲聊"),
    ("明天会下雨吗", "闲聊"),
]
# What the whitening is fitted on: short questions of the same kinds, built from parts.
FIT = [
    f"{who}{verb}{thing}"
    for who in ("", "我", "请问", "为什么我", "怎么才能")
    for verb in ("开通", "关闭", "申请", "查询", "取消", "修改", "还")
    for thing in ("花呗", "借呗", "信用卡", "密码", "余额", "订单", "退款", "贷款")
]


@pytest.mark.slow
def test_the_real_model_finds_the_paraphrase_and_whitening_spreads_cosines(
    browser: Any, start_server: StartServer
) -> None:
    encoder = Encoder("me5-small", device="cpu")
    pipeline = EmbeddingPipeline(
        encoder, Whitening(32).fit(encoder.encode(FIT + [t for t, _ in FAQ]))
    )
    url = start_server(pipeline=pipeline, api_key=KEY)
    docs = [{"text": text, "payload": {"topic": topic}} for text, topic in FAQ]
    headers = {"Authorization": f"Bearer {KEY}"}
    httpx.post(f"{url}/documents", json={"documents": docs}, headers=headers).raise_for_status()
    page = Page(browser, url)
    try:
        page.set_key(KEY)
        page.page.wait_for_function("() => document.querySelectorAll('#info dt').length > 1")
        page.search("怎么开通花呗", top_k=5)
        expected = ranked(pipeline, "怎么开通花呗", [t for t, _ in FAQ])[:5]
        assert page.column("text") == [text for _, text in expected]
        assert page.column("text")[0] == "花呗怎么开通"
        page.page.click("#compare-form button")  # 今天天气很好 / 我想办信用卡
        page.page.locator("#compare").wait_for(state="visible")
        raw = float(page.page.inner_text("#cos-raw").split()[0])
        whitened = float(page.page.inner_text("#cos-whitened").split()[0])
        assert raw > 0.75  # e5's unrelated sentences still sit in a narrow cone
        assert abs(whitened) < raw - 0.3
        page.screenshot("ui-search.png")

        page.search("信用卡逾期", top_k=5, mode="hybrid")
        assert page.column("text")[0] == "信用卡逾期了怎么办"
        assert page.page.locator("#results td.sparse-rank").first.inner_text() == "1"
        page.screenshot("ui-hybrid.png")

        page.page.uncheck("#whiten")
        page.search("怎么开通花呗", top_k=5)
        assert min(float(s) for s in page.column("raw")) > 0.75
        page.screenshot("ui-raw.png")

        page.set_key("wrong-key")
        page.page.check("#whiten")
        page.search("怎么开通花呗", top_k=5)
        assert page.error("search").startswith("401")
        page.screenshot("ui-error.png")
    finally:
        page.context.close()
