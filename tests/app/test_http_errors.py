"""Statuses and messages for bodies that are not what a route takes, and the offline docs."""

from __future__ import annotations

import re

import httpx
import pytest


def test_malformed_json_is_400_saying_where(client: httpx.Client) -> None:
    response = client.post(
        "/embed", content=b'{"texts": ["a",]}', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert re.fullmatch(
        r"the body is not valid JSON: .+ at character \d+", response.json()["detail"]
    )


@pytest.mark.parametrize(
    "headers",
    [{"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}],
)
def test_a_body_that_is_not_sent_as_json_is_415(
    client: httpx.Client, headers: dict[str, str]
) -> None:
    response = client.post("/search", content=b'{"query": "hi"}', headers=headers)
    assert response.status_code == 415
    assert "Content-Type: application/json" in response.json()["detail"]
    assert headers["Content-Type"] in response.json()["detail"]


def test_json_with_a_charset_or_a_json_suffix_is_accepted(client: httpx.Client) -> None:
    for content_type in ("application/json; charset=utf-8", "application/vnd.api+json"):
        response = client.post(
            "/embed", content=b'{"texts": ["hi"]}', headers={"Content-Type": content_type}
        )
        assert response.status_code == 200, content_type


def test_errors_do_not_echo_the_input(client: httpx.Client) -> None:
    secret = "x" * 50 + "secret"
    response = client.post("/embed", json={"texts": [secret], "whiten": secret})
    assert response.status_code == 422
    assert "secret" not in response.text


def test_405_lists_every_method_of_the_path(client: httpx.Client) -> None:
    response = client.put("/documents/1")
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"DELETE", "GET", "PATCH"}


def test_an_existing_id_names_the_request_field_to_replace_it(client: httpx.Client) -> None:
    client.post("/documents", json={"documents": [{"id": 1, "text": "a"}]})
    response = client.post("/documents", json={"documents": [{"id": 1, "text": "b"}]})
    assert response.status_code == 409
    assert response.json()["detail"].endswith('send "upsert": true to replace them')


def test_docs_are_served_from_the_app_without_a_cdn(client: httpx.Client) -> None:
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert "cdn" not in html.lower() and "http" not in html.replace("http-equiv", "")
        for asset in re.findall(r'(?:src|href)="(/docs-assets/[^"]+)"', html):
            assert client.get(asset).status_code == 200, asset
    assets = client.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in assets
    assert (
        client.get("/docs-assets/swagger-ui-bundle.js")
        .headers["content-type"]
        .startswith("text/javascript")
    )


def test_a_blank_query_names_the_field_once(client: httpx.Client) -> None:
    response = client.post("/search", json={"query": "   "})
    assert response.status_code == 422
    assert [e["msg"] for e in response.json()["detail"]] == [
        "query: must not be empty or only whitespace"
    ]
    assert response.json()["detail"][0]["loc"] == ["body", "query"]
