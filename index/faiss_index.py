"""The FAISS index over a store's vectors: built from a factory string, trained when enough
vectors are stored, moved to GPU when there is one, and its own position -> id labels.

Deletion never calls ``remove_ids`` (slow on flat and IVF indexes, missing on HNSW): deleting or
replacing a document marks its position dead (label -1), searches skip dead positions, and once a
quarter of the positions are dead the index is refilled from the stored vectors (training is
kept). Ids stay stable whatever the index type. Not thread-safe: the store's locks guard it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from baihua.index.errors import StoreSettingError
from baihua.index.positions import PositionMap

# faiss-cpu only uses BLAS for Flat search from 128000 queries per call (its default), which a
# service never sends; at 20, batches of 256 queries ran 7x faster at 1M x 256.
faiss.cvar.distance_compute_blas_threshold = 20

# FAISS runs a search over several queries in an OpenMP team whose size is a per-thread setting.
# A service searches from many request threads at once: each thread's default team (every core)
# then spins against the others' (Flat 10k x 384, one query: p50 60.7 ms against 0.52 ms with one
# thread). Few queries search in the calling thread alone; batches keep the thread's setting.
_TEAM_FROM_QUERIES = 32
_LOOKUPS_UP_TO = 0.125  # share of the positions below which ids are looked up one by one
_COMPACT_FRACTION = 0.25  # refill the index once this share of its positions is dead
_KMEANS_POINTS_PER_CENTROID = 39  # below this faiss k-means warns that training is too thin
GPU_MAX_K = 2048  # FAISS GPU k-selection limit
# An HNSW index's settings where search_params leave them out. FAISS's own (efConstruction 40,
# efSearch 16) lose recall with size. HNSW32 x 128 whitened dims at 1M (docs/results.md, "Scale"):
# efConstruction 80 reached recall@10 0.82 at efSearch 128 and 0.94 at 1024; efConstruction 200
# reaches 0.946 at 256, 0.960 at 384 (p99 8.5 ms, one client) and 0.969 at 512, for a build
# ~2.5x slower than at 80.
HNSW_DEFAULTS: dict[str, float] = {"efConstruction": 200, "efSearch": 384}
# FAISS's own nprobe, restated: a snapshot keeps the nprobe it was saved with, and a store reopened
# without search_params must not go on probing that many lists.
IVF_DEFAULTS: dict[str, float] = {"nprobe": 1}
# Parameters that count (lists, graph neighbours): FAISS truncates a fraction and wraps a value
# past its int, and nprobe=-1 becomes 2**64 - 1, all without a word.
_COUNTS = ("nprobe", "efSearch", "efConstruction")
_MAX_COUNT = 2**31 - 1


class FaissIndex:
    """A factory index (or its exact Flat stand-in until it can train) and its labels.

    ``exact_fallback``: the factory index needs training and too few vectors are stored yet, so
    a Flat index serves instead (searches are exact meanwhile).
    """

    index: Any
    on_gpu: bool
    exact_fallback: bool
    positions: PositionMap  # position -> id (-1 dead) and id -> position of the live ones
    dirty: bool  # changed since the last snapshot
    _selects: bool | None  # whether the index takes an IDSelector; None: not tried yet
    # the last allowed_positions: ids array, positions state, mask, the mask packed as bits
    _last_mask: tuple[Any, tuple[int, int], npt.NDArray[np.bool_], npt.NDArray[np.uint8]] | None

    def __init__(self, dim: int, factory: str, *, use_gpu: bool | None, search_params: str) -> None:
        self.dim = dim
        self.factory = factory
        self.search_params = search_params
        self._search_settings = _parse_search_params(search_params)
        self.min_train = _min_training_size(self.new_factory_index())
        self._refills = 0  # counts index replacements, so a training aside knows it is stale
        self._last_mask = None
        self._use_gpu = use_gpu
        self._gpu = _gpu_resources(use_gpu)
        self._gpu_lock = threading.Lock()  # FAISS GPU indexes do not allow concurrent searches

    def new_factory_index(self) -> Any:
        if "IDMap" in self.factory:
            raise StoreSettingError(
                "factory",
                self.factory,
                f"factory {self.factory!r}: ids are managed by the store, drop the IDMap prefix",
            )
        try:
            index = faiss.index_factory(self.dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as error:
            raise StoreSettingError(
                "factory",
                self.factory,
                f"FAISS cannot build factory {self.factory!r} for dim={self.dim}: {error}",
            ) from None
        self._apply_search_params(index, on_gpu=False)  # before any add: efConstruction counts
        return index

    # -------------------------------------------------------------------------------- building

    def build(
        self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32], *, train: bool
    ) -> None:
        """A new index over the given vectors: the factory index, trained on them if it needs
        training and ``train``; the exact Flat fallback if it needs training and not ``train``."""
        index = self.new_factory_index()
        exact_fallback = not index.is_trained and not train
        if exact_fallback:
            index = faiss.IndexFlatIP(self.dim)
        index, on_gpu = self._to_device(index)
        if not index.is_trained:
            index.train(vectors)
        self._fill(index, on_gpu, exact_fallback, ids, vectors)

    def refill(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        """Empty the current index (keeping its training) and add these vectors."""
        self._fill(self.index, self.on_gpu, self.exact_fallback, ids, vectors)

    def restore(self, index: Any, labels: npt.NDArray[np.int64], exact_fallback: bool) -> None:
        """Use a loaded (CPU) index with its labels as they are."""
        index, on_gpu = self._to_device(index)
        self._set(index, on_gpu, exact_fallback, labels)
        self.dirty = False

    def refill_loaded(
        self, index: Any, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]
    ) -> None:
        """Refill a loaded trained index (an outdated snapshot) with the current vectors."""
        index, on_gpu = self._to_device(index)
        self._fill(index, on_gpu, False, ids, vectors)

    # --------------------------------------------------------------------------------- changes

    @property
    def labels(self) -> npt.NDArray[np.int64]:
        """Position -> id, -1 dead."""
        return self.positions.labels

    @property
    def n_dead(self) -> int:
        return len(self.positions.labels) - len(self.positions)

    def add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        self.index.add(vectors)
        self.positions.append(ids)
        self.dirty = True

    def remove(self, ids: Sequence[int]) -> None:
        """Mark the positions of these live ids dead (KeyError for one that is not live)."""
        self.positions.kill(np.asarray(ids, dtype=np.int64))
        self.dirty = self.dirty or bool(len(ids))

    def wants_training(self) -> bool:
        """The exact fallback serves and enough vectors are stored to train the factory index."""
        return self.exact_fallback and len(self.positions) >= self.min_train

    def fallback_vectors(self, start: int) -> tuple[int, npt.NDArray[np.float32]]:
        """A copy of the exact fallback's vectors from position ``start`` on (positions only grow
        until the index is replaced), with the count of replacements they belong to."""
        n = self.index.ntotal
        if n <= start:
            return self._refills, np.empty((0, self.dim), dtype=np.float32)
        return self._refills, self.index.reconstruct_n(start, n - start)

    def trained_aside(self, vectors: npt.NDArray[np.float32]) -> Any:
        """A new factory index trained on ``vectors`` (a CPU index this one does not share,
        so no lock is needed while its k-means runs)."""
        index = self.new_factory_index()
        index.train(vectors)
        return index

    def swap_trained(self, index: Any, refills: int) -> bool:
        """Serve ``index`` (trained, holding the vector of every position) in place of the exact
        fallback; False, changing nothing, when the fallback was replaced since ``refills``."""
        if refills != self._refills or not self.exact_fallback:
            return False
        if index.ntotal != len(self.labels):
            raise RuntimeError(f"trained index holds {index.ntotal} of {len(self.labels)} vectors")
        index, on_gpu = self._to_device(index)
        self._apply_search_params(index, on_gpu=on_gpu)
        self.index, self.on_gpu, self.exact_fallback = index, on_gpu, False
        self.dirty = True
        self._selects = None
        self._refills += 1
        return True

    def wants_compaction(self) -> bool:
        return self.n_dead > _COMPACT_FRACTION * len(self.labels)

    # ----------------------------------------------------------------------------------- reads

    def search(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Scores and positions (-1: none) of the ``k`` nearest positions, dead ones included."""
        if self.on_gpu:
            with self._gpu_lock:
                return self.index.search(queries, k)  # type: ignore[no-any-return]
        with _team(len(queries)):
            return self.index.search(queries, k)  # type: ignore[no-any-return]

    def search_selected(
        self, queries: npt.NDArray[np.float32], k: int, allowed: npt.NDArray[np.bool_]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]] | None:
        """``search`` restricted to the positions where ``allowed`` (a mask over positions) is
        true, through a FAISS ``IDSelectorBitmap``; None where this index cannot select (GPU
        indexes, and types without selector support such as IndexPQ)."""
        if self.on_gpu or self._selects is False:
            return None
        last = self._last_mask
        if last is not None and last[2] is allowed:
            bits = last[3]
        else:
            bits = np.packbits(allowed, bitorder="little")  # FAISS reads bit i of byte i >> 3
        selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
        params = _selection_parameters(self.index, selector)
        try:
            with _team(len(queries)):
                found = self.index.search(queries, k, params=params)
        except RuntimeError:
            if self._selects:  # selection worked on this index before: a real error
                raise
            self._selects = False
            return None
        self._selects = True
        return found  # type: ignore[no-any-return]

    def allowed_positions(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """A mask over positions, true at the live positions of ``ids`` (ascending ids): a
        look-up per id while they are few, one vectorised pass over the labels otherwise.

        The last mask (read-only) is given again for the same ``ids`` array while no position
        changed: the database hands out one array per filter until a write, and at 1M mapping
        a 1 % filter's ids to a mask and packing it cost ~2 ms a query."""
        last = self._last_mask
        if last is not None and last[0] is ids and last[1] == self._positions_state():
            return last[2]
        if len(ids) > _LOOKUPS_UP_TO * len(self.labels):
            allowed = np.isin(self.labels, ids)
        else:
            allowed = np.zeros(len(self.labels), dtype=bool)
            found = self.positions.find(ids)
            allowed[found[found >= 0]] = True
        allowed.flags.writeable = False
        bits = np.packbits(allowed, bitorder="little")  # FAISS reads bit i of byte i >> 3
        self._last_mask = (ids, self._positions_state(), allowed, bits)
        return allowed

    def _positions_state(self) -> tuple[int, int]:
        return id(self.positions), self.positions.version

    def probes_lists(self) -> bool:
        """An IVF index (not its exact stand-in): a search scans the probed lists whatever a
        selector allows, where a graph walks ever further to find allowed nodes."""
        return isinstance(_inner(self.index), faiss.IndexIVF)

    def held_vectors(
        self, ids: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]] | None:
        """The live ones of ``ids`` and their vectors exactly as added, read from the index's
        memory; None where it keeps no such copy (PQ or IVF codes, transforms, a GPU index)."""
        flat = None if self.on_gpu else _flat_storage(self.index)
        if flat is None:
            return None
        found = self.positions.find(ids)
        live = found >= 0
        return np.asarray(ids, dtype=np.int64)[live], flat.reconstruct_batch(found[live])

    def ids_at(self, positions: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Document ids at the given positions; -1 for none and for dead positions."""
        return np.where(positions >= 0, self.labels[np.maximum(positions, 0)], -1)

    def cpu_copy(self) -> Any:
        """A CPU copy that later changes to this index leave alone (to write it out unlocked);
        cloning is about twice as fast as serialising (HNSW32 100k x 128: 0.10 s vs 0.20 s)."""
        return self.cpu_index() if self.on_gpu else faiss.clone_index(self.index)

    def cpu_index(self) -> Any:
        if not self.on_gpu:
            return self.index
        with self._gpu_lock:
            return faiss.index_gpu_to_cpu(self.index)

    # ------------------------------------------------------------------------------- internals

    def _fill(
        self,
        index: Any,
        on_gpu: bool,
        exact_fallback: bool,
        ids: npt.NDArray[np.int64],
        vectors: npt.NDArray[np.float32],
    ) -> None:
        index.reset()
        if len(ids):
            index.add(vectors)
        self._set(index, on_gpu, exact_fallback, ids)

    def _set(
        self, index: Any, on_gpu: bool, exact_fallback: bool, labels: npt.NDArray[np.int64]
    ) -> None:
        if not exact_fallback:
            self._apply_search_params(index, on_gpu=on_gpu)
        self.index = index
        self.on_gpu = on_gpu
        self.exact_fallback = exact_fallback
        self.positions = PositionMap(labels)
        self.dirty = True
        self._selects = None
        self._refills += 1
        self._last_mask = None

    def _apply_search_params(self, index: Any, *, on_gpu: bool) -> None:
        """The store's defaults for this kind of index, then ``search_params``, one at a time so
        that a name the index lacks is named."""
        settings = {**_defaults(index), **self._search_settings}
        space = faiss.GpuParameterSpace() if on_gpu else faiss.ParameterSpace()
        for name, value in settings.items():
            try:
                space.set_index_parameter(index, name, value)
            except RuntimeError:
                raise StoreSettingError(
                    "search_params",
                    self.search_params,
                    f"FAISS search parameters {self.search_params!r} do not fit "
                    f"{self.factory!r}, which has no parameter {name!r} (it takes "
                    f"{', '.join(_parameter_names(index, space)) or 'none: leave them empty'})",
                ) from None

    def _to_device(self, index: Any) -> tuple[Any, bool]:
        """The index moved to GPU 0 when GPU use is on and FAISS has a GPU version of it."""
        if self._gpu is None:
            return index, False
        try:
            return faiss.index_cpu_to_gpu(self._gpu, 0, index), True
        except RuntimeError as error:
            if self._use_gpu:
                raise StoreSettingError(
                    "use_gpu",
                    True,
                    f"use_gpu=True but FAISS has no GPU version of {self.factory!r}: {error}",
                ) from None
            return index, False


def _flat_storage(index: Any) -> Any:
    """The IndexFlat holding the vectors as added: the index itself, or an HNSW's storage."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexHNSW):
        index = faiss.downcast_index(index.storage)
    return index if isinstance(index, faiss.IndexFlat) else None


def _parse_search_params(text: str) -> dict[str, float]:
    """``"efSearch=384,efConstruction=200"`` as {name: value}; a malformed part or count raises
    here, when the store opens, instead of FAISS taking it silently or at the first search."""
    settings: dict[str, float] = {}
    for part in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = (piece.strip() for piece in part.partition("="))
        number = _finite(value)
        if not name or number is None:
            raise StoreSettingError(
                "search_params",
                text,
                f"FAISS search parameters {text!r}: {part!r} is not name=number; write them as "
                "efSearch=384 (HNSW) or nprobe=16 (IVF), comma-separated",
            )
        if name in _COUNTS and not (number.is_integer() and 1 <= number <= _MAX_COUNT):
            raise StoreSettingError(
                "search_params",
                text,
                f"FAISS search parameters {text!r}: {name} must be a whole number from 1 to "
                f"{_MAX_COUNT}, got {value}",
            )
        settings[name] = number
    return settings


def _finite(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if np.isfinite(number) else None


def _inner(index: Any) -> Any:
    """The index itself, or the one behind its vector transforms (PCA, OPQ)."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return index


def _defaults(index: Any) -> dict[str, float]:
    """The settings the store gives this kind of index where search_params leave them out."""
    if isinstance(_inner(index), faiss.IndexHNSW):
        return HNSW_DEFAULTS
    return IVF_DEFAULTS if faiss.try_extract_index_ivf(index) is not None else {}


def _parameter_names(index: Any, space: Any) -> list[str]:
    """What FAISS can tune on ``index`` (its ParameterSpace's names), efConstruction for HNSW."""
    space.initialize(index)
    ranges: Any = space.parameter_ranges  # a SWIG vector; faiss's stub calls it a list
    names = [ranges.at(i).name for i in range(ranges.size())]
    return names + ["efConstruction"] if isinstance(_inner(index), faiss.IndexHNSW) else names


def _selection_parameters(index: Any, selector: Any) -> Any:
    """SearchParameters carrying ``selector`` and the index's own search settings (nprobe,
    efSearch), which parameters passed to a search replace."""
    index = faiss.downcast_index(index)
    swig: Any = faiss  # faiss's stub lacks the keyword constructors of SearchParameters*
    if isinstance(index, faiss.IndexPreTransform):
        return swig.SearchParametersPreTransform(
            index_params=_selection_parameters(index.index, selector)
        )
    if isinstance(index, faiss.IndexIVF):
        return swig.SearchParametersIVF(
            sel=selector, nprobe=index.nprobe, max_codes=index.max_codes
        )
    if isinstance(index, faiss.IndexHNSW):
        return swig.SearchParametersHNSW(sel=selector, efSearch=index.hnsw.efSearch)
    return swig.SearchParameters(sel=selector)


@contextlib.contextmanager
def _team(n_queries: int) -> Iterator[None]:
    """A search of few queries without an OpenMP team; the thread's setting is kept otherwise."""
    if n_queries >= _TEAM_FROM_QUERIES:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _min_training_size(index: Any) -> int:
    """Stored vectors needed before training: 39 per centroid of the largest k-means inside."""
    if index.is_trained:
        return 0
    centroids = 0
    parts = [index]
    while parts:
        part: Any = faiss.downcast_index(parts.pop())
        if isinstance(part, faiss.IndexPreTransform):
            parts.append(part.index)
            chain: Any = part.chain  # a SWIG vector; faiss's stub calls it a list
            for k in range(chain.size()):
                if isinstance(faiss.downcast_VectorTransform(chain.at(k)), faiss.OPQMatrix):
                    centroids = max(centroids, 256)  # OPQ trains an 8-bit PQ
        if isinstance(part, faiss.IndexIVF):
            centroids = max(centroids, part.nlist)
        if isinstance(getattr(part, "pq", None), faiss.ProductQuantizer):
            centroids = max(centroids, part.pq.ksub)
        if getattr(part, "storage", None) is not None:
            parts.append(part.storage)
    # Unknown trainable parts (scalar or additive quantizers, PCA): assume an 8-bit codebook.
    return _KMEANS_POINTS_PER_CENTROID * (centroids or 256)


def _gpu_resources(use_gpu: bool | None) -> Any:
    """FAISS GPU resources when the store should run on GPU, else None."""
    available = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if use_gpu and not available:
        raise StoreSettingError(
            "use_gpu",
            True,
            "use_gpu=True but FAISS has no GPU here (a faiss-cpu build or no visible device); "
            "install faiss-gpu or pass use_gpu=None",
        )
    return faiss.StandardGpuResources() if available and use_gpu is not False else None
