"""Search planning for the FAISS store: which positions a search may return, how FAISS is asked
for them, and when an exact scan over the stored documents must take over.

A filtered search first takes each query's nearest candidates without the filter and asks the
document database which of them match (a look-up per candidate): a filter that keeps a fair share
of the documents costs about an unfiltered search. Queries it leaves short, as a selective filter
does, resolve the filter to the ids of every matching document through the payload index; with
those ids or with deleted or replaced documents (dead positions), FAISS searches only the allowed
positions through an IDSelector, so the top k it returns are the top k of the allowed documents
as far as the index type finds them. Index types without selectors (GPU indexes, IndexPQ) fetch
candidates in widening rounds instead. A query left with fewer hits than allowed documents and
``top_k`` (IVF lists not probed, a very selective filter on HNSW) is answered by an exact scan;
so is every query when only a few documents are allowed (under 1,024, or under 2 % of the
positions except on an IVF index, which probes its lists through the selector as cheaply as
without one: IVF1024,PQ32 at 1M, a 1 % filter answered exactly from SQLite took ~150 ms).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import numpy.typing as npt

from baihua.index.database import DocumentDatabase
from baihua.index.faiss_index import GPU_MAX_K, FaissIndex
from baihua.index.filters import Filter

# Allowed documents below which scoring them directly beats the index: 1024, or 2 % of the
# positions. A graph index given a selector that keeps 1 % of 100k documents searched for 1.4 s
# (HNSW32), where reading and scoring those 1,000 vectors takes milliseconds.
_EXACT_BELOW = 1024
_EXACT_SHARE = 0.02
_BY_ID_BELOW = 65536  # allowed documents read by id for an exact scan; more: one pass over all
_FILTER_OVERFETCH = 4  # first candidate list of a widening search, in multiples of top_k
_FETCH_LIMIT = 4096  # widest candidate list asked of FAISS before an exact scan takes over
_MIN_CANDIDATES = 128  # unfiltered candidates a filtered search looks through first
_SCAN_ROWS = 4096  # rows per step of an exact scan, bounding its memory

Ranked = list[list[tuple[int, float]]]  # (id, score) per query, best first
Block = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]  # ids and their vectors


def search(
    index: FaissIndex,
    database: DocumentDatabase,
    queries: npt.NDArray[np.float32],
    top_k: int,
    filter: Filter | None,
) -> Ranked:
    """(id, score) lists per query: the ``top_k`` best allowed documents, fewer if fewer match."""
    if not index.positions:
        return [[] for _ in queries]
    if filter is None:
        return _search_allowed(index, database, queries, top_k, None)
    few = database.matching_ids(filter, limit=_EXACT_BELOW)
    if len(few) < _EXACT_BELOW:  # all of them: score them directly
        return exact_search(database, queries, top_k, few, index)
    known = database.known_matches(filter)
    if known is not None and len(known) < _EXACT_SHARE * len(index.labels):
        # selective, and its ids at hand: unfiltered candidates would hold too few of them
        return _search_allowed(index, database, queries, top_k, filter)
    found = _post_filtered(index, database, queries, top_k, filter)
    short = [q for q, hits in enumerate(found) if hits is None]
    if short:
        rest = _search_allowed(index, database, queries[short], top_k, filter)
        for query, hits in zip(short, rest, strict=True):
            found[query] = hits
    return [hits or [] for hits in found]


def _post_filtered(
    index: FaissIndex,
    database: DocumentDatabase,
    queries: npt.NDArray[np.float32],
    top_k: int,
    filter: Filter,
) -> list[list[tuple[int, float]] | None]:
    """The ``top_k`` matching documents among each query's nearest candidates; None for a
    query with too few of them (the caller searches the allowed positions instead)."""
    found: list[list[tuple[int, float]] | None] = [None] * len(queries)
    limit = min(len(index.labels), GPU_MAX_K if index.on_gpu else max(_FETCH_LIMIT, top_k))
    fetch = min(max(_FILTER_OVERFETCH * top_k, _MIN_CANDIDATES), limit)
    scores, positions = index.search(queries, fetch)
    ids = index.ids_at(positions)
    matching = database.matching_among(filter, np.unique(ids[ids >= 0]).tolist())
    for query, (row_ids, row_scores) in enumerate(zip(ids.tolist(), scores.tolist(), strict=True)):
        hits = [(i, s) for i, s in zip(row_ids, row_scores, strict=True) if i in matching]
        if len(hits) >= top_k:
            found[query] = hits[:top_k]
    return found


def _search_allowed(
    index: FaissIndex,
    database: DocumentDatabase,
    queries: npt.NDArray[np.float32],
    top_k: int,
    filter: Filter | None,
) -> Ranked:
    """The top k among the live positions that match ``filter`` (every live one for None)."""
    allowed_ids: npt.NDArray[np.int64] | None = None
    allowed: npt.NDArray[np.bool_] | None = None
    if filter is not None:
        allowed_ids = database.matching_ids(filter)
        share = len(allowed_ids) < _EXACT_SHARE * len(index.labels)
        if len(allowed_ids) < _EXACT_BELOW or (share and not index.probes_lists()):
            return exact_search(database, queries, top_k, allowed_ids, index)
        allowed = index.allowed_positions(allowed_ids)
    elif index.n_dead:
        allowed = index.labels >= 0
    n_allowed = len(index.positions) if allowed is None else int(allowed.sum())
    k = min(top_k, len(index.labels))
    if index.on_gpu and k > GPU_MAX_K:
        return exact_search(database, queries, top_k, allowed_ids)
    found: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]] | None
    if allowed is None:
        found = index.search(queries, k)
    else:
        found = index.search_selected(queries, k, allowed)
    if found is None:
        assert allowed is not None
        ranked = _widening_search(index, queries, top_k, allowed)
    else:
        scores, positions = found
        ids = index.ids_at(positions)
        ranked = [
            [(i, s) for i, s in zip(row_ids, row_scores, strict=True) if i >= 0]
            for row_ids, row_scores in zip(ids.tolist(), scores.tolist(), strict=True)
        ]
    short = [q for q, hits in enumerate(ranked) if len(hits) < min(top_k, n_allowed)]
    if short:
        exact = exact_search(database, queries[short], top_k, allowed_ids)
        for query, hits in zip(short, exact, strict=True):
            ranked[query] = hits
    return ranked


def _widening_search(
    index: FaissIndex,
    queries: npt.NDArray[np.float32],
    top_k: int,
    allowed: npt.NDArray[np.bool_],
) -> Ranked:
    """Fetch candidates in doubling rounds, keeping allowed positions, until each query has
    ``top_k`` or the fetch reaches its limit (the caller scans the short ones exactly)."""
    found: Ranked = [[] for _ in range(len(queries))]
    n_positions = len(index.labels)
    limit = min(n_positions, GPU_MAX_K if index.on_gpu else max(_FETCH_LIMIT, top_k))
    fetch = min(_FILTER_OVERFETCH * top_k, limit)
    pending = list(range(len(queries)))
    while pending:
        scores, positions = index.search(queries[pending], fetch)
        ids = index.ids_at(positions)
        keep = (positions >= 0) & allowed[np.maximum(positions, 0)]
        unresolved = []
        for row, query in enumerate(pending):
            row_ids, row_scores = ids[row][keep[row]].tolist(), scores[row][keep[row]].tolist()
            hits = list(zip(row_ids, row_scores, strict=True))
            found[query] = hits[:top_k]
            exhausted = bool((positions[row] < 0).any()) or fetch >= limit
            if len(hits) < top_k and not exhausted:
                unresolved.append(query)
        pending = unresolved
        fetch = min(2 * fetch, limit)
    return found


def exact_search(
    database: DocumentDatabase,
    queries: npt.NDArray[np.float32],
    top_k: int,
    allowed_ids: npt.NDArray[np.int64] | None = None,
    index: FaissIndex | None = None,
) -> Ranked:
    """Score every stored document (or the allowed ones), in bounded steps. A few allowed ones
    are read from ``index`` where it holds their vectors as stored (Flat, HNSW over Flat): at
    1M documents, 10,000 vectors read from SQLite by id took ~40 ms, from the index ~2 ms."""
    blocks: Iterable[Block]
    held = None
    if index is not None and allowed_ids is not None and len(allowed_ids) < _BY_ID_BELOW:
        held = index.held_vectors(allowed_ids)
    if held is not None:
        blocks = [held] if len(held[0]) else []
    elif allowed_ids is not None and len(allowed_ids) < _BY_ID_BELOW:
        blocks = _read(database, allowed_ids)
    else:
        blocks = _scan(database, allowed_ids)
    best_ids = np.empty((len(queries), 0), dtype=np.int64)
    best_scores = np.empty((len(queries), 0), dtype=np.float32)
    for ids, vectors in blocks:
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


def _read(database: DocumentDatabase, allowed_ids: npt.NDArray[np.int64]) -> Iterator[Block]:
    for start in range(0, len(allowed_ids), _SCAN_ROWS):
        stored = database.vectors(allowed_ids[start : start + _SCAN_ROWS].tolist())
        if stored:
            ids = np.array(sorted(stored), dtype=np.int64)
            yield ids, np.stack([stored[i] for i in ids.tolist()])


def _scan(database: DocumentDatabase, allowed_ids: npt.NDArray[np.int64] | None) -> Iterator[Block]:
    for ids, vectors in database.scan(_SCAN_ROWS):
        if allowed_ids is not None:
            keep = np.isin(ids, allowed_ids)
            ids, vectors = ids[keep], vectors[keep]
        if len(ids):
            yield ids, vectors
