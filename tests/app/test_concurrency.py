"""Many clients at once: micro-batched embeds stay exact, and every acknowledged write is found."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from baihua.encoder import EmbeddingPipeline

N_CLIENTS = 8
ROUNDS = 6
# Assigned ids go above the largest id; callers who choose ids keep them below a seeded one.
SEED_ID = 10_000_000


def client_session(url: str, client_id: int, expected: np.ndarray, texts: list[str]) -> dict:
    """Interleave writes, embeds and searches; returns this client's acknowledged documents."""
    acknowledged: dict[int, dict] = {}
    with httpx.Client(base_url=url, timeout=60) as http:
        for round in range(ROUNDS):
            documents = [
                {"text": f"doc {client_id} {round} a", "payload": {"client": client_id}},
                # chosen ids from a range of its own, mixed with assigned ones
                {"id": 1000 * client_id + round, "text": f"doc {client_id} {round} b"},
            ]
            documents[1]["payload"] = {"client": client_id}
            added = http.post("/documents", json={"documents": documents})
            assert added.status_code == 201, added.text
            for id, document in zip(added.json()["ids"], documents, strict=True):
                acknowledged[id] = document

            embedded = http.post("/embed", json={"texts": texts})
            np.testing.assert_allclose(embedded.json()["embeddings"], expected, atol=1e-5)

            body = {"query": "doc", "top_k": 100, "filter": {"client": client_id}}
            hits = http.post("/search", json=body).json()["results"]
            assert {hit["id"] for hit in hits} == set(acknowledged)  # reads see own writes
    return acknowledged


def test_concurrent_clients_see_exact_vectors_and_every_acknowledged_document(
    server: str, pipeline: EmbeddingPipeline
) -> None:
    texts_per_client = [[f"hello {i} 的", "bert " * (i + 1), "我在中国"] for i in range(N_CLIENTS)]
    expected = [pipeline.embed(texts).vectors for texts in texts_per_client]
    seed = {"documents": [{"id": SEED_ID, "text": "seed", "payload": {"client": -1}}]}
    assert httpx.post(f"{server}/documents", json=seed).status_code == 201
    with ThreadPoolExecutor(N_CLIENTS) as pool:
        sessions = list(
            pool.map(
                client_session,
                [server] * N_CLIENTS,
                range(N_CLIENTS),
                expected,
                texts_per_client,
            )
        )

    acknowledged = {id: doc for session in sessions for id, doc in session.items()}
    assert len(acknowledged) == N_CLIENTS * ROUNDS * 2  # no id was handed out twice
    with httpx.Client(base_url=server) as http:
        for id, document in acknowledged.items():
            stored = http.get(f"/documents/{id}").json()
            assert (stored["text"], stored["payload"]) == (document["text"], document["payload"])
        hits = http.post("/search", json={"query": "doc", "top_k": 1000}).json()["results"]
        assert {hit["id"] for hit in hits} == set(acknowledged) | {SEED_ID}
        metrics = http.get("/metrics").text
    batch_count = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("baihua_encoder_batch_size_count")
    )
    encoder_requests = N_CLIENTS * ROUNDS * 3  # each round: one add, one embed, one search
    assert batch_count < encoder_requests  # requests shared encoder calls
