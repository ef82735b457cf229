"""The OpenAPI document is the truth: schemathesis, every check, against the live server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.app.conftest import StartServer

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
EXAMPLES = 15  # per operation and phase; the seed keeps the run reproducible


def test_schemathesis_finds_no_failure_with_every_check(start_server: StartServer) -> None:
    url = start_server(api_key="secret", max_texts_per_request=8, max_chars_per_text=64)
    run = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(EXAMPLES),
            "--seed",
            "0",
            "--header",
            "Authorization: Bearer secret",
            "--no-color",
            # generation speed depends on the machine's load, not on the API under test
            "--suppress-health-check=too_slow",
        ],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert run.returncode == 0, run.stdout[-6000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert generated and generated.group(1) == generated.group(2), run.stdout[-2000:]
    assert int(generated.group(1)) > 100
    operations = re.search(r"Operations:\s+(\d+) selected / (\d+) total", run.stdout)
    assert operations and operations.group(1) == operations.group(2), run.stdout[:2000]
    assert re.search(r"Tested:\s+" + operations.group(2) + r"\b", run.stdout), run.stdout[-2000:]
    print(f"schemathesis: {generated.group(0)}, 0 failures")  # shown by `pytest -s`


def test_the_filter_and_payload_schemas_agree_with_the_server(start_server: StartServer) -> None:
    url = start_server()
    schema = httpx.get(f"{url}/openapi.json").json()
    search = schema["components"]["schemas"]["SearchRequest"]["properties"]["filter"]
    assert {"$ref": "#/components/schemas/Filter"} in search["anyOf"]
    assert "Payload" in schema["components"]["schemas"]
    body = {"query": "x", "filter": {"$or": [{}]}}  # the schema's parts are non-empty filters
    assert "empty filter" in httpx.post(f"{url}/search", json=body).text
    listed = httpx.get(f"{url}/documents", params={"filter": '{"a": 1e300}'})
    assert listed.status_code == 422 and "2**53" in listed.text
    deep = httpx.get(f"{url}/documents", params={"filter": "[" * 3000})
    assert deep.status_code == 422 and "nested too deeply" in deep.text
    payload = {"documents": [{"text": "a", "payload": {"n": [1e300]}}]}
    assert "64 bits" in httpx.post(f"{url}/documents", json=payload).text
    assert httpx.post(f"{url}/documents/delete", json={"filter": {}}).status_code == 422


def test_the_schema_states_this_servers_limits(start_server: StartServer) -> None:
    url = start_server(max_texts_per_request=8, max_chars_per_text=64)
    schemas = httpx.get(f"{url}/openapi.json").json()["components"]["schemas"]
    texts = schemas["EmbedRequest"]["properties"]["texts"]
    assert (texts["minItems"], texts["maxItems"]) == (1, 8)
    assert texts["items"]["maxLength"] == 64
    assert "x-limit" not in httpx.get(f"{url}/openapi.json").text


def test_without_an_api_key_the_schema_asks_for_none(start_server: StartServer) -> None:
    with_key = httpx.get(f"{start_server(api_key='k')}/openapi.json").json()
    without = httpx.get(f"{start_server()}/openapi.json").json()
    assert "securitySchemes" in with_key["components"]
    assert "401" in with_key["paths"]["/embed"]["post"]["responses"]
    assert "securitySchemes" not in without["components"]
    assert "401" not in without["paths"]["/embed"]["post"]["responses"]
