"""TEI's request and answer on POST /embed, beside ours."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest

from baihua.encoder import EmbeddingPipeline
from tests.app.conftest import MAX_LENGTH

TEXTS = ["hello world", "我在中国"]


def test_tei_inputs_list_gets_the_bare_list_of_vectors(
    client: httpx.Client, pipeline: EmbeddingPipeline
) -> None:
    response = client.post("/embed", json={"inputs": TEXTS})
    assert response.status_code == 200
    np.testing.assert_allclose(np.array(response.json()), pipeline.embed(TEXTS).vectors, atol=1e-6)


def test_tei_inputs_string_is_one_vector(client: httpx.Client, pipeline: EmbeddingPipeline) -> None:
    body = client.post("/embed", json={"inputs": "hello world"}).json()
    assert len(body) == 1
    np.testing.assert_allclose(body[0], pipeline.embed(["hello world"]).vectors[0], atol=1e-6)


def test_tei_normalize_false_and_our_options_apply(
    client: httpx.Client, pipeline: EmbeddingPipeline
) -> None:
    body = client.post(
        "/embed", json={"inputs": TEXTS, "normalize": False, "text_type": "passage"}
    ).json()
    expected = pipeline.embed(TEXTS, normalize=False, text_type="passage").vectors
    np.testing.assert_allclose(np.array(body), expected, atol=1e-5)


def test_truncate_false_refuses_a_text_over_the_token_limit(client: httpx.Client) -> None:
    long_text = " ".join(["hello"] * (2 * MAX_LENGTH))
    refused = client.post("/embed", json={"inputs": ["hi", long_text], "truncate": False})
    assert refused.status_code == 422
    (error,) = refused.json()["detail"]
    assert re.fullmatch(
        rf"inputs\[1\]: text has \d+ tokens; the limit is {MAX_LENGTH} \(send truncate: true .*",
        error["msg"],
    )
    cut = client.post("/embed", json={"inputs": [long_text], "truncate": True})
    assert cut.status_code == 200
    assert client.post("/embed", json={"texts": [long_text]}).json()["truncated"] == [True]


def test_truncation_direction_left_cuts_the_start(
    client: httpx.Client, pipeline: EmbeddingPipeline
) -> None:
    long_text = " ".join(["hello"] * MAX_LENGTH + ["world", "bert"] * MAX_LENGTH)
    for direction, side in [("Right", "right"), ("right", "right"), ("Left", "left")]:
        body = {"inputs": long_text, "truncation_direction": direction}
        response = client.post("/embed", json=body)
        assert response.status_code == 200
        expected = pipeline.embed([long_text], truncation_side=side).vectors  # type: ignore[arg-type]
        np.testing.assert_allclose(response.json(), expected, atol=1e-6)
    left = pipeline.embed([long_text], truncation_side="left").vectors
    assert not np.allclose(left, pipeline.embed([long_text]).vectors, atol=1e-3)
    refused = client.post("/embed", json={"inputs": "hi", "truncation_direction": "middle"})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["msg"].startswith("truncation_direction: ")


@pytest.mark.parametrize(
    "body,message",
    [
        ({"inputs": "hi", "texts": ["hi"]}, "body: give exactly one of `texts` or `inputs`"),
        ({"inputs": 3}, "inputs: must be a string or a list of strings"),
        ({"inputs": ["ok", ""]}, "inputs[1]: must not be empty or only whitespace"),
        ({"inputs": []}, "inputs: List should have at least 1 item after validation, not 0"),
        ({"inputs": None}, "body: `inputs` must not be null; leave it out instead"),
    ],
)
def test_invalid_tei_requests_are_422_in_plain_words(
    client: httpx.Client, body: dict[str, object], message: str
) -> None:
    response = client.post("/embed", json=body)
    assert response.status_code == 422
    assert [error["msg"] for error in response.json()["detail"]] == [message]
