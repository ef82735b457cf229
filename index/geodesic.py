"""Geodesic re-ranking of search hits over a kNN graph of the stored vectors.

After Su (kexue.fm/archives/9368) and arXiv 2209.07496: cosine distance is trusted only at short
range, so the corpus becomes a graph whose edges join each vector to its ``k`` nearest neighbours
(weight = cosine distance 1 - u.v on unit vectors, the graph symmetrised), and the distance from a
query to a candidate is the shortest path through that graph, entered from the query's own ``k``
nearest candidates: the query joins the graph like any node, so its distance to candidate c is
min over entries e of (1 - q.e) + path(e, c).
``sklearn.manifold.Isomap(n_neighbors=k, metric="cosine")`` computes the same graph distances.

Searches run no shortest-path search. When the graph is built, a bounded Dijkstra from every node
(``scipy.sparse.csgraph.dijkstra``, a block of sources per call) keeps each node's ``reach``
nearest nodes by path length, with their exact full-graph distances: the geodesic table. A batch
of queries then costs a few array operations: gather the table rows of every query's entries, add
the entry offsets, take the minimum per (query, candidate). A candidate whose best entry has it
in its table gets its exact full-graph distance; one that no entry's table holds is "unreached".

Fallbacks, so every candidate gets a finite distance:

- a candidate missing from the graph (added since the last build) is reached from the query
  directly: its distance is its cosine distance;
- a candidate in the graph that no entry's table holds (farther than ``reach`` nodes along the
  manifold, or in another component) ranks after every reached one, by cosine distance; its
  distance is reported as the largest reached distance of that query plus its cosine distance,
  so the reported distances are ascending in rank order.

Building is an exact kNN search over every stored vector (FAISS ``IndexFlatIP``, batched):
O(n^2 d), then the table, O(n · reach · k log) plus one (block, n) distance matrix per block; see
``bench/geodesic_batch.py`` for the times at 36k documents.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
from scipy import sparse
from scipy.sparse.csgraph import connected_components, dijkstra

from baihua.index.store import Hit, Store

logger = logging.getLogger(__name__)

_MIN_EDGE = 1e-9  # scipy's sparse graphs drop zero weights; identical vectors stay joined
_KNN_BATCH = 4096  # rows per FAISS search while building, bounding the (batch, k) results
_TABLE_BLOCK = 256  # Dijkstra sources per call while building: a (256, n) float64 result
_RADIUS_SAMPLE = 64  # nodes whose unbounded Dijkstra sets the bound of the others
_CANDIDATE_FACTOR = 4  # candidates fetched per hit returned, before the configured minimum

Ids = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


def fetch_size(top_k: int, candidates: int = 50) -> int:
    """How many cosine candidates to re-rank for ``top_k`` results: max(4 * top_k, candidates)."""
    return max(_CANDIDATE_FACTOR * top_k, candidates)


@dataclass(frozen=True)
class KnnGraph:
    """The symmetrised kNN graph of a set of unit vectors and its geodesic table; immutable, so
    searches share it.

    Attributes
    ----------
    ids : int64 array, ascending
        Node ``i`` is the vector with id ``ids[i]``.
    adjacency : scipy.sparse.csr_matrix, (n, n)
        Cosine distances along kNN edges (an edge where either end lists the other).
    table : scipy.sparse.csr_matrix, (n, n)
        Row i: node i's ``reach`` nearest nodes by path length (itself included, at an explicit
        0) and their exact shortest-path distances through the whole graph.
    k : int
        Neighbours per vector; also how many nearest candidates a query enters the graph from.
    """

    ids: Ids
    adjacency: Any  # scipy.sparse.csr_matrix, float64
    table: Any  # scipy.sparse.csr_matrix, float64
    k: int

    @classmethod
    def build(
        cls, ids: npt.ArrayLike, vectors: npt.ArrayLike, k: int = 10, *, reach: int = 64
    ) -> KnnGraph:
        """The graph of ``vectors`` (unit rows, one per id) with ``k`` neighbours each, and each
        node's ``reach`` nearest nodes along it."""
        for name, value in (("k", k), ("reach", reach)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
        id_array = np.asarray(ids, dtype=np.int64)
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or len(x) != len(id_array):
            raise ValueError(f"need one vector row per id; got {x.shape} for {len(id_array)} ids")
        order = np.argsort(id_array, kind="stable")
        id_array, x = id_array[order], x[order]
        if len(np.unique(id_array)) != len(id_array):
            raise ValueError("ids must be unique")
        n = len(id_array)
        if n < 2:
            itself = sparse.csr_matrix((np.zeros(n), np.arange(n), np.arange(n + 1)), shape=(n, n))
            return cls(id_array, _empty(n), itself, k)
        neighbours, weights = _knn(x, min(k, n - 1))
        rows = np.repeat(np.arange(n), neighbours.shape[1])
        directed = sparse.csr_matrix(
            (weights.ravel(), (rows, neighbours.ravel())), shape=(n, n), dtype=np.float64
        )
        # Distances are symmetric, so max() is the union of both directions' edges.
        adjacency = directed.maximum(directed.T).tocsr()
        return cls(id_array, adjacency, _geodesic_table(adjacency, reach), k)

    @classmethod
    def empty(cls, k: int = 10) -> KnnGraph:
        return cls(np.empty(0, np.int64), _empty(0), _empty(0), k)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, id: object) -> bool:
        return bool(self.nodes(np.array([id], dtype=np.int64))[1][0])

    @property
    def nbytes(self) -> int:
        """Memory of the adjacency, the geodesic table and the ids."""
        total = self.ids.nbytes
        for matrix in (self.adjacency, self.table):
            total += matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes
        return int(total)

    def nodes(self, ids: npt.ArrayLike) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        """Node of each id (0 where absent) and whether it is in the graph; any shape."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(self.ids):
            return np.zeros(ids.shape, np.intp), np.zeros(ids.shape, bool)
        if self.ids[-1] - self.ids[0] == len(self.ids) - 1:  # ascending and unique: a range
            position = np.clip(ids - self.ids[0], 0, len(self.ids) - 1)
        else:
            position = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return position, self.ids[position] == ids

    def distances_batch(
        self, ids: npt.ArrayLike, scores: npt.ArrayLike
    ) -> tuple[Floats, npt.NDArray[np.bool_]]:
        """Geodesic distance from each query to each of its candidates, and whether a path
        reached it; ``ids`` and ``scores`` are (queries, candidates): the candidates' ids (-1:
        no candidate, FAISS's padding; its distance is inf) and cosine similarities.

        See the module docstring for the table bound and the fallbacks.
        """
        candidates = np.atleast_2d(np.asarray(ids, dtype=np.int64))
        direct = np.maximum(1.0 - np.atleast_2d(np.asarray(scores, dtype=np.float64)), 0.0)
        if candidates.ndim != 2 or direct.shape != candidates.shape:
            raise ValueError("ids and scores must have the same (queries, candidates) shape")
        valid = candidates >= 0
        nodes, in_graph = self.nodes(candidates)
        in_graph &= valid
        distance = np.where(valid, direct, np.inf)
        reached = valid & ~in_graph
        if in_graph.any():
            path = self._table_distances(nodes, in_graph, direct)
            distance = np.where(in_graph, path, distance)
            reached |= in_graph & np.isfinite(path)
        fallback = valid & ~reached
        if fallback.any():
            longest = np.where(reached, distance, 0.0).max(axis=1, keepdims=True)
            distance = np.where(fallback, longest + direct, distance)
        return distance, reached

    def rank_batch(
        self, ids: npt.ArrayLike, scores: npt.ArrayLike, top_k: int
    ) -> tuple[npt.NDArray[np.intp], Floats]:
        """Per query, positions of the ``top_k`` candidates nearest by geodesic distance, best
        first, and their distances: reached candidates first, ties keep the candidates' order;
        -1 (distance inf) past the query's last valid candidate."""
        distance, reached = self.distances_batch(ids, scores)
        rows = np.arange(len(distance))[:, None]
        by_distance = np.argsort(distance, axis=1, kind="stable")
        # Unreached after reached; invalid (inf) last of all, stably.
        group = np.where(reached, 0, np.where(np.isfinite(distance), 1, 2))[rows, by_distance]
        order = by_distance[rows, np.argsort(group, axis=1, kind="stable")][:, :top_k]
        ranked = distance[rows, order]
        return np.where(np.isfinite(ranked), order, -1), ranked

    def distances(
        self, ids: npt.ArrayLike, scores: npt.ArrayLike
    ) -> tuple[Floats, npt.NDArray[np.bool_]]:
        """:meth:`distances_batch` for one query's 1-D ``ids`` and ``scores``."""
        candidates, similarities = np.asarray(ids), np.asarray(scores)
        if candidates.ndim != 1 or similarities.shape != candidates.shape:
            raise ValueError("ids and scores must be 1-D and of equal length")
        distance, reached = self.distances_batch(candidates[None], similarities[None])
        return distance[0], reached[0]

    def rank(
        self, ids: npt.ArrayLike, scores: npt.ArrayLike, top_k: int
    ) -> tuple[npt.NDArray[np.intp], Floats]:
        """:meth:`rank_batch` for one query's 1-D ``ids`` and ``scores``."""
        candidates, similarities = np.asarray(ids), np.asarray(scores)
        if candidates.ndim != 1 or similarities.shape != candidates.shape:
            raise ValueError("ids and scores must be 1-D and of equal length")
        order, distance = self.rank_batch(candidates[None], similarities[None], top_k)
        keep = order[0] >= 0
        return order[0][keep], distance[0][keep]

    def _table_distances(
        self, nodes: npt.NDArray[np.intp], in_graph: npt.NDArray[np.bool_], direct: Floats
    ) -> Floats:
        """min over each query's entries e of direct(e) + table[e, c], for every candidate c
        (inf where no entry's table row holds c); entries: the k in-graph candidates of least
        cosine distance."""
        n_queries, width = nodes.shape
        rows = np.arange(n_queries)[:, None]
        entry_rank = np.where(in_graph, direct, np.inf)
        entries = np.argsort(entry_rank, axis=1, kind="stable")[:, : self.k]
        entry_ok = np.isfinite(entry_rank[rows, entries])
        entry_nodes, offsets = nodes[rows, entries][entry_ok], entry_rank[rows, entries][entry_ok]
        entry_query = np.broadcast_to(rows, entries.shape)[entry_ok]
        # Every (query, node in the table row of one of its entries, path length): flat gathers.
        starts, stops = self.table.indptr[entry_nodes], self.table.indptr[entry_nodes + 1]
        lengths = stops - starts
        flat = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        path = np.repeat(offsets, lengths) + self.table.data[flat]
        # Match them to the candidates by key query * (n + 1) + node: the candidates' keys,
        # sorted within each row, are sorted overall (n marks a candidate outside the graph).
        n = len(self.ids)
        masked = np.where(in_graph, nodes, n)
        by_node = np.argsort(masked, axis=1, kind="stable")
        keys = (rows * (n + 1) + np.take_along_axis(masked, by_node, axis=1)).ravel()
        wanted = np.repeat(entry_query, lengths) * (n + 1) + self.table.indices[flat]
        slot = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
        hit = keys[slot] == wanted
        best = np.full(len(keys), np.inf)
        np.minimum.at(best, slot[hit], path[hit])
        # searchsorted finds the first copy of a repeated candidate; give every copy its value.
        first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        best = best[first[np.cumsum(np.r_[True, keys[1:] != keys[:-1]]) - 1]]
        out = np.empty((n_queries, width))
        np.put_along_axis(out, by_node, best.reshape(n_queries, width), axis=1)
        return out


def _empty(n: int) -> Any:
    return sparse.csr_matrix((n, n), dtype=np.float64)


def _geodesic_table(adjacency: Any, reach: int) -> Any:
    """Each node's ``reach`` nearest nodes by shortest path (itself first, at 0; fewer if its
    component is smaller) and their exact distances, as a CSR matrix.

    Bounded Dijkstra, ``_TABLE_BLOCK`` sources per call. The first bound is the median
    ``reach``-th distance of ``_RADIUS_SAMPLE`` evenly spaced nodes' unbounded searches, so a
    search explores about ``reach`` nodes; the sources that found fewer than they should are
    searched again with the bound doubled, until none is left."""
    n = adjacency.shape[0]
    reach = min(reach, n)
    _, component = connected_components(adjacency, directed=False)
    wanted = np.minimum(reach, np.bincount(component)[component])
    sample = np.unique(np.linspace(0, n - 1, min(_RADIUS_SAMPLE, n)).astype(np.intp))
    full = dijkstra(adjacency, directed=True, indices=sample)
    radius = float(np.median(np.partition(full, reach - 1, axis=1)[:, reach - 1]))
    if not np.isfinite(radius):  # most sampled nodes' components are smaller than reach
        radius = float(np.where(np.isfinite(full), full, -np.inf).max())
    radius = max(radius, _MIN_EDGE)
    rows: dict[int, tuple[npt.NDArray[np.intp], Floats]] = {}
    pending = np.arange(n)
    while len(pending):
        short = []
        for start in range(0, len(pending), _TABLE_BLOCK):
            sources = pending[start : start + _TABLE_BLOCK]
            block = dijkstra(adjacency, directed=True, indices=sources, limit=radius)
            block[np.arange(len(sources)), sources] = -1.0  # itself first, whatever the ties
            nearest = np.argpartition(block, reach - 1, axis=1)[:, :reach]
            values = np.take_along_axis(block, nearest, axis=1)
            for source, near, value in zip(sources, nearest, values, strict=True):
                keep = np.isfinite(value)
                if keep.sum() < wanted[source]:
                    short.append(source)
                else:
                    rows[int(source)] = (near[keep], np.maximum(value[keep], 0.0))
        pending = np.array(short, dtype=np.intp)
        radius *= 2.0
    lengths = np.array([len(rows[i][0]) for i in range(n)])
    table = sparse.csr_matrix(
        (
            np.concatenate([rows[i][1] for i in range(n)]),
            np.concatenate([rows[i][0] for i in range(n)]),
            np.concatenate([[0], np.cumsum(lengths)]),
        ),
        shape=(n, n),
    )
    table.sort_indices()
    return table


def _knn(vectors: npt.NDArray[np.float32], k: int) -> tuple[npt.NDArray[np.int64], Floats]:
    """Each row's ``k`` nearest other rows by inner product, and their cosine distances."""
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    n = len(vectors)
    neighbours = np.empty((n, k), np.int64)
    weights = np.empty((n, k), np.float64)
    for start in range(0, n, _KNN_BATCH):
        stop = min(start + _KNN_BATCH, n)
        scores, found = index.search(vectors[start:stop], k + 1)
        # Drop each row's own entry; with duplicate vectors it may not come first or at all,
        # and then the (k+1)-th is the one dropped.
        own = found == np.arange(start, stop)[:, None]
        own[~own.any(axis=1), -1] = True
        neighbours[start:stop] = found[~own].reshape(-1, k)
        weights[start:stop] = np.maximum(1.0 - scores[~own].reshape(-1, k), _MIN_EDGE)
    return neighbours, weights


class GeodesicReranker:
    """Re-ranks a store's search hits by geodesic distance, keeping the graph current.

    The graph is rebuilt, not patched: every write calls ``mark_stale()``, and a background
    thread rebuilds from the stored vectors and swaps the new graph in atomically; writes during a
    build cause one more build after it. Searches never wait: they use the last built graph, in
    which new documents are missing (reached directly, see the module docstring) and deleted ones
    still carry paths until the next swap (they are never returned: the hits come from the store).

    Nothing is built until the first ``rerank`` (or ``rebuild``), so a service that never re-ranks
    pays nothing; that first search, and any before the first build is in, keeps cosine order.

    Parameters
    ----------
    store : Store
        Holds unit vectors (scores are cosine similarities).
    k : int
        Neighbours per vector in the graph.
    candidates : int
        Hits fetched for re-ranking: ``fetch_size(top_k, candidates)``.
    reach : int
        Nearest nodes along the graph whose distances each node keeps (the geodesic table).
    """

    def __init__(self, store: Store, k: int = 10, *, candidates: int = 50, reach: int = 64) -> None:
        for name, value, low in (("k", k, 1), ("candidates", candidates, 1), ("reach", reach, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
        self.store = store
        self.k = k
        self.candidates = candidates
        self.reach = reach
        self._graph = KnnGraph.empty(k)
        self._state = threading.Condition()
        self._build_lock = threading.Lock()  # builds run one at a time, so swaps stay in order
        self._requested = 1  # write generations seen; the empty graph matches none of them
        self._built = 0
        self._active = False
        self._closed = False
        self._worker: threading.Thread | None = None

    @property
    def graph(self) -> KnnGraph:
        """The graph searches use now."""
        return self._graph

    @property
    def stale(self) -> bool:
        """Writes happened since the current graph was read from the store."""
        with self._state:
            return self._built < self._requested

    def fetch_size(self, top_k: int) -> int:
        """How many hits to fetch from the store for ``top_k`` re-ranked ones."""
        return fetch_size(top_k, self.candidates)

    def rerank(self, hits_per_query: Sequence[Sequence[Hit]], top_k: int) -> list[list[Hit]]:
        """The ``top_k`` of each query's hits (best cosine first, as ``store.search`` returns
        them) nearest by geodesic distance, with ``Hit.geodesic`` set; ``Hit.score`` stays the
        cosine similarity."""
        with self._state:
            if not self._active:
                self._active = True
                self._start_worker()
        graph = self._graph
        width = max((len(hits) for hits in hits_per_query), default=0)
        ids = np.full((len(hits_per_query), width), -1, np.int64)
        scores = np.zeros((len(hits_per_query), width))
        for row, hits in enumerate(hits_per_query):
            ids[row, : len(hits)] = [h.id for h in hits]
            scores[row, : len(hits)] = [h.score for h in hits]
        orders, distances = graph.rank_batch(ids, scores, top_k)
        return [
            [
                dataclasses.replace(hits[i], geodesic=d)
                for i, d in zip(order.tolist(), distance.tolist(), strict=True)
                if i >= 0
            ]
            for hits, order, distance in zip(hits_per_query, orders, distances, strict=True)
        ]

    def mark_stale(self) -> None:
        """Record a write; rebuilds in the background once re-ranking is in use. Never blocks."""
        with self._state:
            self._requested += 1
            if self._active:
                self._start_worker()

    def rebuild(self) -> None:
        """Build the graph from the store now, in this thread, and swap it in."""
        with self._state:
            self._active = True
            target = self._requested
        self._build(target)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until no background build is running or due; False on timeout."""
        with self._state:
            return self._state.wait_for(lambda: self._worker is None, timeout)

    def close(self) -> None:
        """Stop rebuilding; waits for a running build to finish (its graph is still swapped in)."""
        with self._state:
            self._closed = True
            worker = self._worker
        if worker is not None:
            worker.join()

    def _start_worker(self) -> None:
        """Start the background builder unless it runs or nothing is due (holding _state)."""
        if self._worker is None and not self._closed and self._built < self._requested:
            self._worker = threading.Thread(target=self._run, name="geodesic-graph", daemon=True)
            self._worker.start()

    def _run(self) -> None:
        try:
            while True:
                with self._state:
                    if self._closed or self._built >= self._requested:
                        return
                    target = self._requested
                self._build(target)
        except Exception:
            # Searches keep the last graph; the next write tries again.
            logger.exception("rebuilding the geodesic graph failed")
        finally:
            with self._state:
                self._worker = None
                self._state.notify_all()

    def _build(self, target: int) -> None:
        """Read every stored vector (writes acknowledged before ``target`` was taken included)
        and swap in their graph, recording that it is current up to ``target``."""
        with self._build_lock:
            ids, vectors = [], []
            for i, vector in self.store.iter_vectors(_KNN_BATCH):
                ids.append(i)
                vectors.append(vector)
            matrix = np.stack(vectors) if vectors else np.empty((0, self.store.dim), np.float32)
            graph = KnnGraph.build(np.array(ids, dtype=np.int64), matrix, self.k, reach=self.reach)
            with self._state:
                self._graph = graph
                self._built = max(self._built, target)
