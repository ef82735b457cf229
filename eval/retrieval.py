"""Retrieval evaluation on BEIR folders: MRR@10, Recall@1/10/top-k, nDCG@10, queries per second
and index size, for a grid of poolings × transforms × re-rankings.

- Queries are encoded as "query", the corpus as "passage" (e5's prefixes; ``corpus_text_type``
  "query" encodes the corpus as queries too, as e5 advises for symmetric tasks such as
  paraphrase search, and then reuses the STS evaluation's cached vectors), through the vector
  cache, so a grid of transforms or a rerun encodes nothing twice.
- A transform is fitted on the corpus vectors (what a deployment fits on: the collection it
  indexes, never the evaluation queries), then applied to both sides before L2 normalisation.
- The index is built directly with ``faiss.index_factory`` (inner product, the store's factory
  strings; trained on the corpus when the factory needs it), so the timings hold FAISS only, not
  the store's SQLite reads of texts and payloads. Index bytes: ``faiss.serialize_index`` size.
- QPS: queries per second of the search step alone, queries sent in batches of 1024: the FAISS
  search, plus for "geodesic" the re-ranking of ``fetch_size(top_k)`` candidates per query
  (one batched table lookup per 1024 queries).
  Encoding, index and graph builds are not timed; the graph's size is reported apart.
- Modes: "dense" (the above), "sparse" (BM25 over jieba words, ``index.sparse``: one row per
  dataset, independent of model and transform; QPS includes segmenting the query) and "hybrid"
  (the dense and sparse top-k of each query fused by ``index.fusion``, one row per fusion; QPS
  counts the dense search, the sparse search and the fusion). Index bytes of a sparse row are
  its saved data file; of a hybrid row, both.
- Metrics use graded relevance as gains (nDCG as in BEIR and ``sklearn.metrics.ndcg_score``);
  a document is relevant when its qrels score is > 0.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from baihua.core.errors import UsageError
from baihua.core.progress import Progress
from baihua.encoder import Encoder, encoder_spec, l2_normalize
from baihua.encoder.encoder import TextType
from baihua.eval.beir import BeirDataset
from baihua.eval.cache import Encode, VectorCache
from baihua.eval.report import markdown_table, write_table
from baihua.eval.transforms import TransformSpec, fit_transform
from baihua.index.fusion import Fusion, fuse
from baihua.index.geodesic import KnnGraph, fetch_size
from baihua.index.segment import Segmenter
from baihua.index.sparse import SparseIndex

RERANKS = ("none", "geodesic")
MODES = ("dense", "sparse", "hybrid")
_QUERY_BATCH = 1024
DEFAULT_MAX_LENGTH = 64  # the paper's evaluation setting; the service reads up to the model's limit


def check_reranks(names: Sequence[str]) -> list[str]:
    unknown = [name for name in names if name not in RERANKS]
    if unknown:
        raise UsageError(f"unknown rerank {unknown[0]!r}; use {' or '.join(RERANKS)}")
    return list(names)


def check_modes(names: Sequence[str]) -> list[str]:
    unknown = [name for name in names if name not in MODES]
    if unknown:
        raise UsageError(f"unknown mode {unknown[0]!r}; use {', '.join(MODES)}")
    return list(names)


def parse_fusion(name: str) -> Fusion:
    """``rrf`` or ``rrf-<k>``; ``weighted`` or ``weighted-<dense weight>``."""
    method, _, value = name.partition("-")
    try:
        if method == "rrf":
            return Fusion("rrf", k=float(value) if value else 60)
        if method == "weighted":
            return Fusion("weighted", weight=float(value) if value else 0.5)
    except ValueError as error:
        raise UsageError(f"fusion {name!r}: {error}") from None
    raise UsageError(f"unknown fusion {name!r}; use rrf[-K] or weighted[-W]")


def check_top_k(top_k: int) -> int:
    if top_k < 10:
        raise UsageError(f"--top-k must be at least 10 (MRR@10, nDCG@10); got {top_k}")
    return top_k


# ------------------------------------------------------------------------------------ metrics


def relevance_gains(ranked: np.ndarray, relevant: Sequence[dict[int, int]]) -> np.ndarray:
    """gains[q, j]: relevance of query q's j-th ranked corpus position (0: not relevant or -1,
    FAISS's "no result")."""
    gains = np.zeros(ranked.shape, dtype=np.float64)
    for row, (positions, judged) in enumerate(zip(ranked.tolist(), relevant, strict=True)):
        gains[row] = [judged.get(p, 0) for p in positions]
    return gains


def mrr_at(gains: np.ndarray, k: int) -> np.ndarray:
    """Per query: 1 / rank of the first relevant document within the top k, else 0."""
    hit = gains[:, :k] > 0
    first = hit.argmax(axis=1)
    return np.where(hit.any(axis=1), 1.0 / (first + 1), 0.0)


def recall_at(gains: np.ndarray, relevant: Sequence[dict[int, int]], k: int) -> np.ndarray:
    """Per query: share of its relevant documents found in the top k."""
    return (gains[:, :k] > 0).sum(axis=1) / np.array([len(judged) for judged in relevant])


def ndcg_at(gains: np.ndarray, relevant: Sequence[dict[int, int]], k: int) -> np.ndarray:
    """Per query: DCG@k = sum of gain / log2(rank + 1), over the DCG@k of the ideal ranking."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (gains[:, :k] * discounts[: gains[:, :k].shape[1]]).sum(axis=1)
    ideal = np.zeros((len(relevant), k))
    for row, judged in enumerate(relevant):
        best = sorted(judged.values(), reverse=True)[:k]
        ideal[row, : len(best)] = best
    return dcg / (ideal * discounts).sum(axis=1)


def score_rankings(
    ranked: np.ndarray, relevant: Sequence[dict[int, int]], top_k: int
) -> dict[str, float]:
    """Mean MRR@10, Recall@1/10/top_k and nDCG@10 of ranked corpus positions (queries × top_k)."""
    gains = relevance_gains(ranked, relevant)
    metrics = {"MRR@10": mrr_at(gains, 10)}
    metrics.update({f"R@{k}": recall_at(gains, relevant, k) for k in sorted({1, 10, top_k})})
    metrics["nDCG@10"] = ndcg_at(gains, relevant, 10)
    return {name: float(values.mean()) for name, values in metrics.items()}


# --------------------------------------------------------------------------------------- grid


@dataclass
class RetrievalResult:
    dataset: str
    model: str
    pooling: str
    transform: str
    rerank: str
    dim: int
    metrics: dict[str, float]
    qps: float
    index_bytes: int
    graph_bytes: int  # the kNN graph geodesic re-ranking keeps besides the index; 0 for "none"
    backend: str = "torch"
    dtype: str = "float32"
    mode: str = "dense"  # "sparse", or "hybrid <fusion>"


@dataclass
class RetrievalEval:
    """One grid over BEIR datasets; ``geodesic_*`` are the settings of the same names."""

    datasets: Sequence[BeirDataset]
    poolings: Sequence[str]
    transforms: Sequence[TransformSpec]
    cache_dir: Path
    reranks: Sequence[str] = ("none",)
    top_k: int = 100
    factory: str = "Flat"
    search_params: str = ""
    max_length: int = DEFAULT_MAX_LENGTH
    geodesic_k: int = 10
    geodesic_candidates: int = 50
    geodesic_reach: int = 64
    corpus_text_type: TextType = "passage"
    modes: Sequence[str] = ("dense",)
    fusions: Sequence[Fusion] = (Fusion("rrf", k=60),)
    progress: Progress | None = None

    def __post_init__(self) -> None:
        check_reranks(self.reranks)
        check_top_k(self.top_k)
        check_modes(self.modes)
        self._segmenter: Segmenter | None = None

    def run(self, encoder: Encoder) -> list[RetrievalResult]:
        results = []
        for dataset in self.datasets:
            sparse = None
            if "sparse" in self.modes or "hybrid" in self.modes:
                sparse = self._sparse(dataset)
                if "sparse" in self.modes:
                    results.append(sparse.result)
            if list(self.modes) == ["sparse"]:
                continue
            vectors = self._vectors(encoder, dataset)
            for pooling in self.poolings:
                raw_corpus, raw_queries = vectors["corpus"][pooling], vectors["queries"][pooling]
                for spec in self.transforms:
                    corpus, queries = transformed(spec, raw_corpus, raw_queries)
                    labels = {
                        "dataset": dataset.name,
                        "model": encoder.name,
                        "backend": encoder.backend,
                        "dtype": encoder.dtype,
                        "pooling": pooling,
                        "transform": spec.name,
                    }
                    if "dense" in self.modes:
                        results += self._evaluate(dataset, corpus, queries, labels)
                    if sparse is not None and "hybrid" in self.modes:
                        results += self._hybrid(dataset, corpus, queries, labels, sparse)
        return results

    def run_sparse(self) -> list[RetrievalResult]:
        """The sparse rows alone: needs no encoder."""
        return [self._sparse(dataset).result for dataset in self.datasets]

    def _sparse(self, dataset: BeirDataset) -> SparseRun:
        """BM25 over the corpus: each query's top_k (position, score), and its result row."""
        if self._segmenter is None:
            self._segmenter = Segmenter()
        index = SparseIndex(self._segmenter)
        index.upsert(list(range(len(dataset.corpus))), dataset.corpus)
        index.merge()
        start = time.perf_counter()
        found = [[(h.id, h.score) for h in index.search(q, self.top_k)] for q in dataset.queries]
        seconds = time.perf_counter() - start
        ranked = np.full((len(found), self.top_k), -1, dtype=np.int64)
        for row, hits in enumerate(found):
            ranked[row, : len(hits)] = [i for i, _ in hits]
        nbytes = index.nbytes
        result = RetrievalResult(
            dataset=dataset.name,
            model="bm25",
            pooling="-",
            transform="-",
            rerank="none",
            dim=0,
            metrics=score_rankings(ranked, dataset.relevant, self.top_k),
            qps=len(found) / seconds,
            index_bytes=nbytes,
            graph_bytes=0,
            backend="-",
            dtype="-",
            mode="sparse",
        )
        return SparseRun(found, seconds, nbytes, result)

    def _hybrid(
        self,
        dataset: BeirDataset,
        corpus: np.ndarray,
        queries: np.ndarray,
        labels: dict[str, str],
        sparse: SparseRun,
    ) -> list[RetrievalResult]:
        """Dense top_k and sparse top_k of each query, fused: one row per fusion."""
        index = build_index(corpus, self.factory, self.search_params)
        index_bytes = len(faiss.serialize_index(index))
        fetch = min(self.top_k, index.ntotal)
        start = time.perf_counter()
        dense_scores, dense_found = index.search(queries, fetch)
        dense_seconds = time.perf_counter() - start
        dense = [
            [(int(i), float(s)) for i, s in zip(ids, scores, strict=True) if i >= 0]
            for ids, scores in zip(dense_found, dense_scores, strict=True)
        ]
        results = []
        for fusion in self.fusions:
            start = time.perf_counter()
            ranked = np.full((len(dense), self.top_k), -1, dtype=np.int64)
            for row, (d, s) in enumerate(zip(dense, sparse.found, strict=True)):
                fused = fuse(d, s, fusion, self.top_k)
                ranked[row, : len(fused)] = [f.id for f in fused]
            seconds = dense_seconds + sparse.seconds + time.perf_counter() - start
            results.append(
                RetrievalResult(
                    **labels,
                    rerank="none",
                    dim=corpus.shape[1],
                    metrics=score_rankings(ranked, dataset.relevant, self.top_k),
                    qps=len(dense) / seconds,
                    index_bytes=index_bytes + sparse.nbytes,
                    graph_bytes=0,
                    mode=f"hybrid {fusion.name}",
                )
            )
        return results

    def _vectors(self, encoder: Encoder, dataset: BeirDataset) -> dict[str, dict[str, np.ndarray]]:
        """ "corpus" or "queries" → pooling → vectors."""
        out: dict[str, dict[str, np.ndarray]] = {}
        sides: list[tuple[str, TextType, list[str]]] = [
            ("corpus", self.corpus_text_type, dataset.corpus),
            ("queries", "query", dataset.queries),
        ]
        for side, text_type, texts in sides:
            cache = VectorCache(
                self.cache_dir,
                encoder_spec(encoder, max_length=self.max_length),
                text_type=text_type,
                variant=encoder.variant,
            )
            out[side] = cache.get(texts, self.poolings, self._encoder(encoder, text_type))
        return out

    def _encoder(self, encoder: Encoder, text_type: TextType) -> Encode:
        def encode(texts: list[str], poolings: list[str]) -> dict[str, np.ndarray]:
            encoded = encoder.encode_poolings(
                texts,
                poolings,
                text_type=text_type,
                max_length=self.max_length,
                progress=self.progress,
            )
            return encoded.vectors

        return encode

    def _evaluate(
        self,
        dataset: BeirDataset,
        corpus: np.ndarray,
        queries: np.ndarray,
        labels: dict[str, str],
    ) -> list[RetrievalResult]:
        index = build_index(corpus, self.factory, self.search_params)
        index_bytes = len(faiss.serialize_index(index))
        graph = None
        if "geodesic" in self.reranks:
            graph = KnnGraph.build(
                np.arange(len(corpus)), corpus, self.geodesic_k, reach=self.geodesic_reach
            )
        results = []
        for rerank in self.reranks:
            used = graph if rerank == "geodesic" else None
            start = time.perf_counter()
            ranked = self._search(index, queries, used)
            seconds = time.perf_counter() - start
            results.append(
                RetrievalResult(
                    **labels,
                    rerank=rerank,
                    dim=corpus.shape[1],
                    metrics=score_rankings(ranked, dataset.relevant, self.top_k),
                    qps=len(queries) / seconds,
                    index_bytes=index_bytes,
                    graph_bytes=used.nbytes if used is not None else 0,
                )
            )
        return results

    def _search(self, index: Any, queries: np.ndarray, graph: KnnGraph | None) -> np.ndarray:
        """Ranked corpus positions, queries × top_k; -1 past the end of a corpus below top_k."""
        fetch = self.top_k if graph is None else fetch_size(self.top_k, self.geodesic_candidates)
        fetch = min(fetch, index.ntotal)
        ranked = np.full((len(queries), self.top_k), -1, dtype=np.int64)
        for start in range(0, len(queries), _QUERY_BATCH):
            scores, found = index.search(queries[start : start + _QUERY_BATCH], fetch)
            if graph is None:
                ranked[start : start + len(found), :fetch] = found
                continue
            order, _ = graph.rank_batch(found, scores, self.top_k)
            picked = np.take_along_axis(found, np.maximum(order, 0), axis=1)
            ranked[start : start + len(found), : order.shape[1]] = np.where(order >= 0, picked, -1)
        return ranked


@dataclass
class SparseRun:
    """BM25's answers on one dataset: per query its best (corpus position, score) pairs."""

    found: list[list[tuple[int, float]]]
    seconds: float
    nbytes: int
    result: RetrievalResult


def transformed(
    spec: TransformSpec, corpus: np.ndarray, queries: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Both sides through the transform fitted on the corpus, then L2-normalised."""
    transform = fit_transform(spec, corpus)
    if transform is not None:
        corpus, queries = transform.transform(corpus), transform.transform(queries)
    return l2_normalize(corpus), l2_normalize(queries)


def build_index(vectors: np.ndarray, factory: str, search_params: str = "") -> Any:
    """A FAISS inner-product index over ``vectors``, trained on them if the factory needs it."""
    try:
        index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            index.train(vectors)
        index.add(vectors)
        if search_params:
            # faiss's stub lacks the overload taking a "name=value,..." string.
            faiss.ParameterSpace().set_index_parameters(index, search_params)  # type: ignore[arg-type]
    except RuntimeError as err:
        raise UsageError(
            f"--index {factory!r} (search params {search_params!r}) over {vectors.shape[0]} "
            f"vectors of {vectors.shape[1]} dims: {str(err).strip().splitlines()[-1]}"
        ) from None
    return index


# ------------------------------------------------------------------------------------ report


def table_rows(results: list[RetrievalResult]) -> tuple[list[str], list[list[str]]]:
    metrics = list(results[0].metrics)
    header = ["dataset", "mode", "model", "backend", "dtype", "pooling", "transform", "rerank"]
    header += ["dim", *metrics, "QPS", "index bytes", "graph bytes"]
    rows = [
        [r.dataset, r.mode, r.model, r.backend, r.dtype, r.pooling, r.transform, r.rerank]
        + [str(r.dim)]
        + [f"{r.metrics[m]:.4f}" for m in metrics]
        + [f"{r.qps:.0f}", str(r.index_bytes), str(r.graph_bytes)]
        for r in results
    ]
    return header, rows


def markdown(results: list[RetrievalResult]) -> str:
    return markdown_table(*table_rows(results))


def write_report(results: list[RetrievalResult], path: Path) -> None:
    write_table(path, *table_rows(results), [asdict(r) for r in results])
