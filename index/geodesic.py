"""Geodesic re-ranking of search hits over a kNN graph of the stored vectors.

After Su (kexue.fm/archives/9368) and arXiv 2209.07496: cosine distance is trusted only at short
range, so the corpus becomes a graph whose edges join each vector to its ``k`` nearest neighbours
(weight = cosine distance 1 - u.v on unit vectors, the graph symmetrised), and the distance from a
query to a candidate is the shortest path through that graph (Dijkstra, ``scipy.sparse.csgraph``),
entered from the query's own ``k`` nearest candidates: the query joins the graph like any node.
``sklearn.manifold.Isomap(n_neighbors=k, metric="cosine")`` computes the same graph distances.

Per search, Dijkstra runs on the subgraph of the candidates and their neighbours up to ``hops``
graph steps away, never on the whole graph, so a search costs milliseconds whatever the corpus.
Paths that leave that subgraph are not seen: a distance can only be longer than the full-graph one.

Fallbacks, so every candidate gets a finite distance:

- a candidate missing from the graph (added since the last build) is reached from the query
  directly: its distance is its cosine distance;
- a candidate in the graph that no path reaches within the subgraph (another component of the
  manifold) ranks after every reached one, by cosine distance; its distance is reported as the
  largest reached distance of that query plus its cosine distance, so the reported distances are
  ascending in rank order.

Building the graph is an exact kNN search over every stored vector (FAISS ``IndexFlatIP``,
batched): O(n^2 d), about 3 s for 20k vectors of 128 dims on 2 cores, so by that scaling minutes
at 100k x 256 and too slow for millions. Re-ranking 400 candidates (top_k = 100) took about
3 ms per query there.
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
from scipy.sparse.csgraph import dijkstra

from baihua.index.store import Hit, Store

logger = logging.getLogger(__name__)

_MIN_EDGE = 1e-9  # scipy's sparse graphs drop zero weights; identical vectors stay joined
_KNN_BATCH = 4096  # rows per FAISS search while building, bounding the (batch, k) results
_CANDIDATE_FACTOR = 4  # candidates fetched per hit returned, before the configured minimum

Ids = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


def fetch_size(top_k: int, candidates: int = 50) -> int:
    """How many cosine candidates to re-rank for ``top_k`` results: max(4 * top_k, candidates)."""
    return max(_CANDIDATE_FACTOR * top_k, candidates)


@dataclass(frozen=True)
class KnnGraph:
    """The symmetrised kNN graph of a set of unit vectors; immutable, so searches share it.

    Attributes
    ----------
    ids : int64 array, ascending
        Node ``i`` is the vector with id ``ids[i]``.
    adjacency : scipy.sparse.csr_matrix, (n, n)
        Cosine distances along kNN edges (an edge where either end lists the other).
    k : int
        Neighbours per vector; also how many nearest candidates a query enters the graph from.
    """

    ids: Ids
    adjacency: Any  # scipy.sparse.csr_matrix, float64
    k: int

    @classmethod
    def build(cls, ids: npt.ArrayLike, vectors: npt.ArrayLike, k: int = 10) -> KnnGraph:
        """The graph of ``vectors`` (unit rows, one per id) with ``k`` neighbours each."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an integer >= 1; got {k!r}")
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
            return cls(id_array, sparse.csr_matrix((n, n), dtype=np.float64), k)
        neighbours, weights = _knn(x, min(k, n - 1))
        rows = np.repeat(np.arange(n), neighbours.shape[1])
        directed = sparse.csr_matrix(
            (weights.ravel(), (rows, neighbours.ravel())), shape=(n, n), dtype=np.float64
        )
        # Distances are symmetric, so max() is the union of both directions' edges.
        return cls(id_array, directed.maximum(directed.T).tocsr(), k)

    @classmethod
    def empty(cls, k: int = 10) -> KnnGraph:
        return cls(np.empty(0, np.int64), sparse.csr_matrix((0, 0), dtype=np.float64), k)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, id: object) -> bool:
        return bool(self.nodes(np.array([id], dtype=np.int64))[1][0])

    @property
    def nbytes(self) -> int:
        """Memory of the adjacency and the ids."""
        a = self.adjacency
        return int(a.data.nbytes + a.indices.nbytes + a.indptr.nbytes + self.ids.nbytes)

    def nodes(self, ids: Ids) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        """Node of each id (0 where absent) and whether it is in the graph."""
        position = np.minimum(np.searchsorted(self.ids, ids), max(len(self.ids) - 1, 0))
        found = self.ids[position] == ids if len(self.ids) else np.zeros(len(ids), bool)
        return position, found

    def distances(
        self, ids: npt.ArrayLike, scores: npt.ArrayLike, *, hops: int = 1
    ) -> tuple[Floats, npt.NDArray[np.bool_]]:
        """Geodesic distance from the query to each candidate, and whether a path reached it.

        ``ids`` and ``scores`` are the query's candidates and their cosine similarities to it.
        See the module docstring for the subgraph bound (``hops``) and the fallbacks.
        """
        candidates = np.asarray(ids, dtype=np.int64)
        direct = np.maximum(1.0 - np.asarray(scores, dtype=np.float64), 0.0)
        if candidates.ndim != 1 or direct.shape != candidates.shape:
            raise ValueError("ids and scores must be 1-D and of equal length")
        nodes, in_graph = self.nodes(candidates)
        distance = direct.copy()
        reached = ~in_graph
        if in_graph.any():
            graph_nodes = nodes[in_graph]
            entries = np.argsort(direct[in_graph], kind="stable")[: self.k]
            region = self._neighbourhood(graph_nodes, hops)
            local = np.searchsorted(region, graph_nodes)
            path = self._shortest_paths(region, local[entries], direct[in_graph][entries])
            distance[in_graph] = path[local]
            reached[in_graph] = np.isfinite(path[local])
        if not reached.all():
            longest = distance[reached].max(initial=0.0)
            distance[~reached] = longest + direct[~reached]
        return distance, reached

    def rank(
        self, ids: npt.ArrayLike, scores: npt.ArrayLike, top_k: int, *, hops: int = 1
    ) -> tuple[npt.NDArray[np.intp], Floats]:
        """Positions of the ``top_k`` candidates nearest by geodesic distance, best first, and
        their distances; reached candidates come first, ties keep the candidates' order."""
        distance, reached = self.distances(ids, scores, hops=hops)
        order = np.lexsort((distance, ~reached))[:top_k]
        return order, distance[order]

    def _neighbourhood(self, nodes: npt.NDArray[np.intp], hops: int) -> npt.NDArray[np.intp]:
        """``nodes`` and every node within ``hops`` edges of them, ascending."""
        region = np.unique(nodes)
        frontier = region
        for _ in range(hops):
            reached = np.unique(self.adjacency[frontier].indices)
            frontier = np.setdiff1d(reached, region, assume_unique=True)
            if not len(frontier):
                break
            region = np.union1d(region, frontier)
        return region

    def _shortest_paths(
        self, region: npt.NDArray[np.intp], entries: npt.NDArray[np.intp], offsets: Floats
    ) -> Floats:
        """Dijkstra on the region's subgraph from a virtual source joined to the entry nodes by
        the query's cosine distances: a node's result is min over entries of offset + path."""
        sub = self.adjacency[region][:, region].tocoo()
        source = len(region)
        graph = sparse.csr_matrix(
            (
                np.concatenate([sub.data, np.maximum(offsets, _MIN_EDGE)]),
                (
                    np.concatenate([sub.row, np.full(len(entries), source)]),
                    np.concatenate([sub.col, entries]),
                ),
            ),
            shape=(source + 1, source + 1),
        )
        return np.asarray(dijkstra(graph, directed=True, indices=source))[:source]


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
    hops : int
        Graph steps around the candidates that a path may use.
    """

    def __init__(self, store: Store, k: int = 10, *, candidates: int = 50, hops: int = 1) -> None:
        for name, value, low in (("k", k, 1), ("candidates", candidates, 1), ("hops", hops, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
        self.store = store
        self.k = k
        self.candidates = candidates
        self.hops = hops
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
        reranked = []
        for hits in hits_per_query:
            ids = np.fromiter((h.id for h in hits), np.int64, len(hits))
            scores = np.fromiter((h.score for h in hits), np.float64, len(hits))
            order, distance = graph.rank(ids, scores, top_k, hops=self.hops)
            reranked.append(
                [
                    dataclasses.replace(hits[i], geodesic=d)
                    for i, d in zip(order.tolist(), distance.tolist(), strict=True)
                ]
            )
        return reranked

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
            graph = KnnGraph.build(np.array(ids, dtype=np.int64), matrix, self.k)
            with self._state:
                self._graph = graph
                self._built = max(self._built, target)
