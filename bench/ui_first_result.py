"""Time to first result in the playground page: a real headless Chromium types a query into
/ui/ of the real server (`baihua serve`, me5-small) over a 10k-document index, and the page's
own clock measures submit → results drawn. Also the page weight (bytes the browser fetched for
the page) and the same search as a bare HTTP request, for the page's overhead.

    .venv/bin/python bench/ui_first_result.py

The index holds random unit vectors (encoding 10k documents would only time the encoder); the
query is embedded by the real model on each search, so the time includes the encoder. Needs
Debian's chromium (`apt-get install -y chromium`) and playwright.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright
from search_latency import QUERIES, fill_index

from baihua.serving.components import build_encoder
from baihua.serving.settings import load_settings
from serving import free_port, start_server, wait_ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="me5-small")
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()

    dim = build_encoder(load_settings(model=args.model)).dim
    with tempfile.TemporaryDirectory() as tmp:
        with fill_index(Path(tmp), dim, args.docs):
            pass
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(port, Path(tmp), "--model", args.model)
        try:
            wait_ready(url, server)
            page_ms, http_ms, weight, load_ms = measure(url, args.chromium, args.queries)
        finally:
            server.terminate()
            server.wait(timeout=60)
    files = ", ".join(f"{name} {size}" for name, size in weight.items())
    print(f"page weight: {sum(weight.values())} bytes ({files})")
    print(f"page load (navigation → service info shown): {load_ms:.0f} ms")
    print(f"{args.docs} documents, {dim} dims, top 10, {len(page_ms)} queries after one warm-up:")
    for name, values in (("page: submit → results drawn", page_ms), ("bare POST /search", http_ms)):
        print(f"  {name:30s} median {statistics.median(values):6.1f} ms  "
              f"max {max(values):6.1f} ms")  # fmt: skip
    ratio = statistics.median(page_ms) / statistics.median(http_ms)
    print(f"  page / bare request: {ratio:.2f}x")


def measure(
    url: str, chromium: str, n: int
) -> tuple[list[float], list[float], dict[str, int], float]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        weight: dict[str, int] = {}
        page.on(
            "response",
            lambda r: (
                weight.__setitem__(r.url.removeprefix(url), len(r.body()))
                if "/ui/" in r.url
                else None
            ),
        )
        started = time.perf_counter()
        page.goto(f"{url}/ui/")
        page.wait_for_function("() => document.querySelectorAll('#info dt').length > 1")
        load_ms = 1000 * (time.perf_counter() - started)
        page_ms, http_ms = [], []
        with httpx.Client(base_url=url, timeout=60) as http:
            for i, query in enumerate(QUERIES[: n + 1]):
                page.fill("#query", query)
                page.click("#search-form button")
                page.wait_for_function(
                    "() => !document.querySelector('#search-form button').disabled"
                )
                shown = page.get_attribute("#results", "data-ms")
                assert shown is not None, page.inner_text("#search-error")
                start = time.perf_counter()
                http.post("/search", json={"query": query, "top_k": 10}).raise_for_status()
                if i:  # the first of each is a warm-up
                    page_ms.append(float(shown))
                    http_ms.append(1000 * (time.perf_counter() - start))
        browser.close()
    return page_ms, http_ms, weight, load_ms


if __name__ == "__main__":
    main()
