"""Filtered-search planning for the FAISS store: how many candidates to ask the index for, and
when an exact scan over the stored documents must take over.

An approximate index returns candidates in score order without knowing the filter, and dead
positions (deleted or replaced documents) take up places among them. Candidates are fetched in
widening rounds until ``top_k`` live matching ones are found; when the index cannot supply enough
(IVF lists not probed, very selective filters), the query is answered by an exact scan.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt

from baihua.index.database import DocumentDatabase
from baihua.index.faiss_index import GPU_MAX_K, FaissIndex
from baihua.index.filters import matches

_FILTER_OVERFETCH = 4  # first candidate list for a filtered search, in multiples of top_k
_FETCH_LIMIT = 4096  # widest candidate list asked of FAISS before an exact scan takes over
_SCAN_ROWS = 4096  # rows per step of an exact scan, bounding its memory

Ranked = list[list[tuple[int, float]]]  # (id, score) per query, best first


def search(
    index: FaissIndex,
    database: DocumentDatabase,
    queries: npt.NDArray[np.float32],
    top_k: int,
    filter: dict[str, Any] | None,
) -> Ranked:
    """(id, score) lists per query; widens the FAISS fetch, then scans exactly if needed."""
    found: Ranked = [[] for _ in range(len(queries))]
    n_positions = len(index.labels)
    if not index.positions:
        return found
    limit = min(n_positions, GPU_MAX_K if index.on_gpu else max(_FETCH_LIMIT, top_k))
    fetch = top_k if filter is None and not index.n_dead else _FILTER_OVERFETCH * top_k
    fetch = min(fetch, limit)
    payloads: dict[int, dict[str, Any]] = {}
    pending, exact = list(range(len(queries))), []
    while pending:
        scores, positions = index.search(queries[pending], fetch)
        ids = index.ids_at(positions)
        if filter is not None:
            new = {i for i in ids[ids >= 0].tolist() if i not in payloads}
            payloads.update((i, d.payload) for i, d in database.documents(new).items())
        unresolved = []
        for row, query in enumerate(pending):
            hits = []
            for i, score in zip(ids[row].tolist(), scores[row].tolist(), strict=True):
                if i >= 0 and (filter is None or matches(payloads[i], filter)):
                    hits.append((i, score))
                    if len(hits) == top_k:
                        break
            exhausted = bool((positions[row] < 0).any())
            if len(hits) == top_k or (fetch == n_positions and not exhausted):
                found[query] = hits
            elif exhausted or fetch >= limit:
                exact.append(query)
            else:
                unresolved.append(query)
        pending = unresolved
        fetch = min(2 * fetch, limit)
    if exact:
        exact_hits = exact_search(database, queries[exact], top_k, filter)
        for query, hits in zip(exact, exact_hits, strict=True):
            found[query] = hits
    return found


def exact_search(
    database: DocumentDatabase,
    queries: npt.NDArray[np.float32],
    top_k: int,
    filter: dict[str, Any] | None,
) -> Ranked:
    """Score every stored (matching) document, streaming the table in bounded steps."""
    best_ids = np.empty((len(queries), 0), dtype=np.int64)
    best_scores = np.empty((len(queries), 0), dtype=np.float32)
    for ids, payloads, vectors in database.scan(_SCAN_ROWS):
        if filter is not None:
            keep_rows = [r for r, p in enumerate(payloads) if matches(json.loads(p), filter)]
            if not keep_rows:
                continue
            ids, vectors = ids[keep_rows], vectors[keep_rows]
        scores = queries @ vectors.T
        best_scores = np.concatenate([best_scores, scores], axis=1)
        best_ids = np.concatenate([best_ids, np.broadcast_to(ids, scores.shape)], axis=1)
        keep = np.argsort(-best_scores, axis=1, kind="stable")[:, :top_k]
        best_scores = np.take_along_axis(best_scores, keep, axis=1)
        best_ids = np.take_along_axis(best_ids, keep, axis=1)
    return [
        list(zip(row_ids.tolist(), row_scores.tolist(), strict=True))
        for row_ids, row_scores in zip(best_ids, best_scores, strict=True)
    ]
