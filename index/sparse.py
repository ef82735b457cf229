"""The sparse index: BM25 (``bm25s``, Lucene's variant) over the words of ``segment.Segmenter``.

It holds, for every live document, its id and its tokens, and answers "the ``top_k`` documents
with the highest BM25 score for this query", optionally among allowed ids (a payload filter
applied before ranking, not after).

Updates. A ``bm25s`` index is static: its matrix holds precomputed per-(term, document) scores
that depend on the corpus statistics (document count, average length, document frequencies). So
the index is a *main segment* (a ``bm25s`` matrix over the documents of the last merge) plus a
*delta*: documents written since (their tokens, kept in memory) and tombstones (main rows
deleted or replaced since). Searches are exact about membership at once: tombstoned rows are
masked, delta documents scored by the same formula with the statistics of the last merge, as
Lucene scores with statistics that still count deleted documents until its segments merge. After
a merge, scores are exactly BM25 of the live documents.

Merges. A merge rebuilds the matrix from the stored tokens (nothing is segmented again); it is
linear in the documents (2–20 s at 100k short sentences on a shared 2-core machine,
``bench/sparse_cost.py``). While the index holds at most ``MERGE_MIN`` documents it runs inside
every write (milliseconds), so a small index never scores with the statistics of a much smaller
corpus. Above that, the write that brings the delta above ``MERGE_SHARE`` of the documents starts
one in a background thread, and neither writes nor searches wait for it: the thread takes a
snapshot of every document's tokens under the write lock (a copy of references), builds the new
main segment from it without any lock, then swaps it in under the write lock, replaying the
writes made meanwhile (each id written since the snapshot is tombstoned in the new segment and,
if it still exists, put in the new delta with its current tokens). One merge runs at a time;
``merge()`` runs one and waits for it.

Persistence (``save``/``open``), in its own folder: ``sparse.json`` names the data file
(``sparse-<token>.npz``: the main segment as it is in memory — ids, vocabulary, each row's
tokens, the ``bm25s`` matrix and the statistics — its tombstones, and the delta's ids and
tokens), its SHA-256, the segmenter's spec, the BM25 parameters, and the *content digest* of the
documents it holds: an order-free sum of a hash of each (id, text), kept up to date by every
write. A save needs no merge, and a load no rebuild: the loaded index scores exactly as the saved
one did. The data file is written first and the manifest replaced last, both atomically
(``core.files.write_atomic``). ``open`` reads the documents' stored (id, text) once, and loads
the saved index only when all of these match; otherwise — missing, damaged, another segmenter or
dictionary, or out of step (writes after the last save, a kill -9 between a store's commit and
the next save) — it segments those texts again and saves, so the index is never served out of
step. The digest names the documents themselves, so no store has to expose a write counter, and
payload changes (which change no words) leave it alone.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import bm25s
import numpy as np
import numpy.typing as npt

from baihua.core.files import write_atomic
from baihua.index.locks import RWLock
from baihua.index.segment import Segmenter
from baihua.index.snapshot import sha256

logger = logging.getLogger(__name__)

FORMAT = "2"
MANIFEST = "sparse.json"
MERGE_MIN = 1000
MERGE_SHARE = 0.1

Documents = Callable[[], Iterable[tuple[int, str]]]
"""Every stored (id, text): what a sparse index is rebuilt from."""


@dataclass(frozen=True)
class Bm25Params:
    """BM25's term-frequency saturation ``k1`` and length normalisation ``b`` (Lucene's
    defaults are 1.2 and 0.75; bm25s's 1.5 and 0.75)."""

    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"


class SparseHit(NamedTuple):
    """A tuple, so a ranking is the list of (id, score) pairs that `fuse` takes as it is."""

    id: int
    score: float


@dataclass(frozen=True)
class _Segment:
    """The main segment: documents of the last merge, their ``bm25s`` matrix and statistics.

    Immutable once built: a search may keep using one while a merge swaps in the next."""

    ids: npt.NDArray[np.int64]
    row: dict[int, int]
    vocab: dict[str, int]
    df: npt.NDArray[np.int64]
    avgdl: float
    bm25: bm25s.BM25 | None  # None when no document has a token
    flat: npt.NDArray[np.int32] = field(repr=False)  # every row's token ids, one after another
    offsets: npt.NDArray[np.int64] = field(repr=False)  # row r is flat[offsets[r]:offsets[r + 1]]

    @property
    def n(self) -> int:
        return len(self.ids)


@dataclass
class _Merge:
    """A merge in progress: the ids written since its snapshot, replayed when it swaps in."""

    written: set[int] = field(default_factory=set)


class SparseIndex:
    """BM25 over segmented words of documents with int64 ids; see the module docstring.

    Parameters
    ----------
    segmenter : turns texts and queries into tokens; its ``spec`` is recorded with the index.
    params : BM25's k1, b (and variant); recorded too.
    path : folder to save in; None keeps the index in memory only.

    Thread-safe: searches run in parallel, writes alone, merges beside both.
    """

    def __init__(
        self, segmenter: Segmenter, params: Bm25Params | None = None, path: Path | None = None
    ) -> None:
        self.segmenter = segmenter
        self.params = params or Bm25Params()
        self.path = None if path is None else Path(path)
        self._lock = RWLock()
        self._tokens: dict[int, list[str]] = {}
        self._main = self._build_segment({})
        self._dead = np.zeros(0, dtype=bool)
        self._delta: set[int] = set()
        self._hashes: dict[int, int] = {}
        self._saved: str | None = None  # the digest on disk, when known to match
        self._merging = threading.Lock()  # one merge at a time
        self._merge: _Merge | None = None  # the merge in progress, if any
        self._merger: threading.Thread | None = None  # its background thread, if it has one
        self.merges = 0  # merges swapped in so far (inline or in the background)

    @classmethod
    def open(
        cls,
        path: Path,
        segmenter: Segmenter,
        *,
        documents: Documents,
        params: Bm25Params | None = None,
    ) -> SparseIndex:
        """The index saved in ``path`` if it holds exactly ``documents`` (every stored id and
        text); else rebuilt from them and saved."""
        index = cls(segmenter, params, path)
        path.mkdir(parents=True, exist_ok=True)
        stored = list(documents())
        reason = index._load(stored)
        if reason is not None:
            logger.warning("sparse index in %s: %s; rebuilding it from the documents", path, reason)
            index.rebuild(stored)
            index.save()
        return index

    # ----------------------------------------------------------------------------------- writes

    def upsert(self, ids: Sequence[int], texts: Sequence[str]) -> None:
        """Index documents, replacing the tokens of ids already indexed."""
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
        tokens = [self.segmenter(text) for text in texts]  # outside the lock: the slow part
        with self._lock.write():
            for i, words, text in zip(ids, tokens, texts, strict=True):
                self._tombstone(int(i))
                self._tokens[int(i)] = words
                self._hashes[int(i)] = _document_hash(int(i), text)
                self._delta.add(int(i))
            self._written(ids)
            self._maybe_merge()

    add = upsert

    def delete(self, ids: Iterable[int]) -> int:
        """Remove documents; returns how many were indexed."""
        removed = 0
        with self._lock.write():
            gone = []
            for i in ids:
                if self._tokens.pop(int(i), None) is not None:
                    del self._hashes[int(i)]
                    removed += 1
                    self._tombstone(int(i))
                    self._delta.discard(int(i))
                    gone.append(int(i))
            self._written(gone)
            self._maybe_merge()
        return removed

    def rebuild(self, documents: Iterable[tuple[int, str]]) -> None:
        """Replace everything with ``documents`` (id, text), merged."""
        stored = list(documents)
        tokens = {int(i): self.segmenter(text) for i, text in stored}
        hashes = {int(i): _document_hash(int(i), text) for i, text in stored}
        with self._merging:
            segment = self._build_segment(tokens)
            with self._lock.write():
                self._tokens, self._hashes = tokens, hashes
                self._install(segment, set())

    def merge(self) -> None:
        """Fold the delta and tombstones into a new main segment, and wait for it: scores
        become exact BM25 (writes made while it ran stay in the new delta). Searches and
        writes go on meanwhile; a merge already running in the background is waited for
        first."""
        self._run_merge()

    def wait_for_merge(self, timeout: float | None = None) -> bool:
        """Wait for a background merge, if one runs; whether none runs now."""
        merger = self._merger
        if merger is not None:
            merger.join(timeout)
            return not merger.is_alive()
        return True

    @property
    def merging(self) -> bool:
        """Whether a merge is building a new main segment now."""
        return self._merge is not None

    # ------------------------------------------------------------------------------------ reads

    def search(
        self, query: str, top_k: int, allowed: npt.ArrayLike | None = None
    ) -> list[SparseHit]:
        """The ``top_k`` documents with the highest BM25 score for ``query``, best first (ties
        by id); only documents sharing a term with it (score > 0). ``allowed``: the ids that may
        be returned (a filter's matches); None allows all."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1; got {top_k}")
        terms = self.segmenter.query_terms(query)
        permitted = None if allowed is None else np.asarray(allowed, dtype=np.int64)
        with self._lock.read():
            main = self._main
            ids, scores = self._score_main(main, terms, permitted)
            delta = sorted(self._delta)
            if permitted is not None:
                allowed_set = set(permitted.tolist())
                delta = [i for i in delta if i in allowed_set]
            delta_scores = [self._score_tokens(main, terms, self._tokens[i]) for i in delta]
        all_ids = np.concatenate([ids, np.array(delta, dtype=np.int64)])
        all_scores = np.concatenate([scores, np.array(delta_scores, dtype=np.float64)])
        keep = all_scores > 0
        all_ids, all_scores = all_ids[keep], all_scores[keep]
        order = np.lexsort((all_ids, -all_scores))[:top_k]
        return [
            SparseHit(i, score)
            for i, score in zip(all_ids[order].tolist(), all_scores[order].tolist(), strict=True)
        ]

    def __len__(self) -> int:
        with self._lock.read():
            return len(self._tokens)

    def __contains__(self, id: object) -> bool:
        with self._lock.read():
            return id in self._tokens

    def tokens(self, id: int) -> list[str] | None:
        """The indexed tokens of a document, or None when it is not indexed."""
        with self._lock.read():
            found = self._tokens.get(int(id))
            return None if found is None else list(found)

    @property
    def pending(self) -> int:
        """Delta documents plus tombstoned rows: what the next merge folds in."""
        with self._lock.read():
            return self._pending()

    @property
    def digest(self) -> str:
        """The content digest of the indexed documents (see ``content_digest``)."""
        with self._lock.read():
            return _digest_of(self._hashes.values())

    @property
    def nbytes(self) -> int:
        """Bytes of the data file a save writes now (segment, matrix, tombstones, delta)."""
        return len(self._serialise(*self._state()))

    # ------------------------------------------------------------------------------ persistence

    def save(self) -> None:
        """Write the data file and the manifest naming the content digest; nothing when the
        saved index already holds these documents. No merge: the state is saved as it is."""
        if self.path is None:
            raise ValueError("this sparse index is in memory (path=None); give it a path")
        main, dead, delta, digest = self._state()
        if digest == self._saved and (self.path / MANIFEST).is_file():
            return
        name = f"sparse-{uuid.uuid4().hex}.npz"
        write_atomic(self.path / name, self._serialise(main, dead, delta, digest))
        manifest = {
            "format": FORMAT,
            "file": name,
            "checksum": sha256(self.path / name),
            "documents": main.n - int(dead.sum()) + len(delta),
            "segmenter": self.segmenter.spec.to_dict(),
            "params": asdict(self.params),
            "digest": digest,
        }
        write_atomic(self.path / MANIFEST, json.dumps(manifest, indent=1).encode())
        self._saved = digest
        for file in self.path.iterdir():
            stale = file.name.startswith("sparse-") and file.name != name
            if stale or ".tmp-" in file.name:
                file.unlink(missing_ok=True)

    def _state(
        self,
    ) -> tuple[_Segment, npt.NDArray[np.bool_], dict[int, list[str]], str]:
        """The main segment, its tombstones, the delta's tokens and the digest, at one
        instant."""
        with self._lock.read():
            delta = {i: self._tokens[i] for i in sorted(self._delta)}
            return self._main, self._dead.copy(), delta, _digest_of(self._hashes.values())

    def _load(self, stored: list[tuple[int, str]]) -> str | None:
        """Load the saved index if it holds ``stored``; else the reason it cannot be used."""
        hashes = {int(i): _document_hash(int(i), text) for i, text in stored}
        assert self.path is not None
        try:
            manifest = json.loads((self.path / MANIFEST).read_text())
        except FileNotFoundError:
            return "no saved index"
        except (OSError, ValueError) as error:
            return f"{MANIFEST} is unreadable ({error})"
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            return f"{MANIFEST} is not of format {FORMAT}"
        changed = self.segmenter.spec.differences(manifest.get("segmenter"))
        if changed:
            listed = ", ".join(f"{k} {old!r} → {new!r}" for k, (old, new) in changed.items())
            return f"it was segmented differently ({listed})"
        if manifest.get("params") != asdict(self.params):
            return f"its BM25 parameters {manifest.get('params')} are not {asdict(self.params)}"
        if manifest.get("digest") != _digest_of(hashes.values()):
            return "the documents changed since it was saved (content digest differs)"

        name = str(manifest.get("file"))
        if Path(name).name != name or not name.startswith("sparse-"):
            return f"{MANIFEST} names an unexpected file {name!r}"
        try:
            if sha256(self.path / name) != manifest.get("checksum"):
                return f"{name} changed since it was saved (checksum mismatch)"
            main, dead, tokens = self._deserialise(self.path / name)
        except (OSError, ValueError, KeyError) as error:
            return f"{name} cannot be read ({error})"
        if tokens.keys() != hashes.keys():
            return f"{name} holds other ids than the documents"
        with self._lock.write():
            self._tokens, self._hashes = tokens, hashes
            self._main, self._dead = main, dead
            self._delta = {i for i in tokens if i not in main.row or dead[main.row[i]]}
            self._maybe_merge()
        self._saved = manifest.get("digest")
        return None

    # -------------------------------------------------------------------------------- internals

    def _pending(self) -> int:
        return len(self._delta) + int(self._dead.sum())

    def _written(self, ids: Iterable[int]) -> None:
        """Note writes for the merge in progress (under the write lock)."""
        if self._merge is not None:
            self._merge.written.update(int(i) for i in ids)

    def _maybe_merge(self) -> None:
        """Under the write lock: a small index merges at once (milliseconds), so its statistics
        are never those of a much smaller corpus; a large one in the background once the delta
        is a share of it."""
        pending = self._pending()
        if not pending:
            return
        if len(self._tokens) <= MERGE_MIN:
            self._main = self._build_segment(self._tokens)
            self._dead = np.zeros(self._main.n, dtype=bool)
            self._delta = set()
            self.merges += 1
        elif pending > MERGE_SHARE * len(self._tokens) and self._merger is None:
            self._merger = threading.Thread(
                target=self._merge_in_background, name="bm25-merge", daemon=True
            )
            self._merger.start()

    def _merge_in_background(self) -> None:
        try:
            self._run_merge()
        except Exception:  # the index stays as it was (main + delta): correct, only slower
            logger.exception("a background merge of the sparse index failed")
        finally:
            with self._lock.write():
                self._merger = None
                self._maybe_merge()  # writes made meanwhile may call for the next one

    def _run_merge(self) -> None:
        """Snapshot the tokens, build a segment from them without the lock, swap it in."""
        with self._merging:
            with self._lock.write():
                if not self._pending():
                    return
                snapshot = dict(self._tokens)  # the lists themselves are never changed
                merge = self._merge = _Merge()
            try:
                segment = self._build_segment(snapshot)
            except BaseException:
                with self._lock.write():
                    self._merge = None
                raise
            with self._lock.write():
                self._merge = None
                self._install(segment, merge.written)
                self._maybe_merge()  # many writes meanwhile may call for another one

    def _install(self, segment: _Segment, written: set[int]) -> None:
        """Make ``segment`` (built from a snapshot) the main one; ``written``: the ids written
        since the snapshot, whose rows there are stale. Under the write lock."""
        self._main = segment
        self._dead = np.zeros(segment.n, dtype=bool)
        for i in written:
            self._tombstone(i)
        self._delta = {i for i in written if i in self._tokens}
        self.merges += 1

    def _tombstone(self, id: int) -> None:
        row = self._main.row.get(id)
        if row is not None:
            self._dead[row] = True

    def _build_segment(self, tokens: dict[int, list[str]]) -> _Segment:
        ids = np.array(sorted(tokens), dtype=np.int64)
        vocab: dict[str, int] = {}
        rows = [[vocab.setdefault(t, len(vocab)) for t in tokens[i]] for i in ids.tolist()]
        df = np.zeros(len(vocab), dtype=np.int64)
        for row in rows:
            df[list(set(row))] += 1
        lengths = [len(row) for row in rows]
        avgdl = float(np.mean(lengths)) if rows else 0.0
        bm25 = None
        if vocab:
            bm25 = bm25s.BM25(k1=self.params.k1, b=self.params.b, method=self.params.method)
            bm25.scores = bm25.build_index_from_ids(
                unique_token_ids=list(range(len(vocab))),
                corpus_token_ids=rows,
                show_progress=False,
            )
            bm25.vocab_dict = vocab
        flat = np.fromiter((t for row in rows for t in row), dtype=np.int32)
        offsets = np.cumsum([0, *lengths], dtype=np.int64)
        row_of = {i: r for r, i in enumerate(ids.tolist())}
        return _Segment(ids, row_of, vocab, df, avgdl, bm25, flat, offsets)

    def _score_main(
        self, main: _Segment, terms: list[str], permitted: npt.NDArray[np.int64] | None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        known = [main.vocab[t] for t in terms if t in main.vocab]
        if main.bm25 is None or not known:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        scores = main.bm25.get_scores_from_ids(known).astype(np.float64)
        live = ~self._dead
        if permitted is not None:
            live &= np.isin(main.ids, permitted)
        rows = np.flatnonzero(live & (scores > 0))
        return main.ids[rows], scores[rows]

    def _score_tokens(self, main: _Segment, terms: list[str], tokens: list[str]) -> float:
        """BM25 (Lucene's formula, as bm25s computes it) of a delta document, with the main
        segment's statistics; a term the main segment lacks counts as in no document."""
        if not tokens:
            return 0.0
        counts = Counter(tokens)
        k1, b = self.params.k1, self.params.b
        avgdl = main.avgdl if main.n else float(len(tokens))
        norm = k1 * (1 - b + b * len(tokens) / avgdl)
        score = 0.0
        for term in terms:
            tf = counts.get(term, 0)
            if tf:
                df = int(main.df[main.vocab[term]]) if term in main.vocab else 0
                idf = math.log(1 + (main.n - df + 0.5) / (df + 0.5))
                score += idf * tf / (tf + norm)
        return score

    def _serialise(
        self,
        main: _Segment,
        dead: npt.NDArray[np.bool_],
        delta: dict[int, list[str]],
        digest: str = "",
    ) -> bytes:
        terms = sorted(main.vocab, key=main.vocab.__getitem__)
        matrix: dict[str, Any] = {}
        if main.bm25 is not None:
            scores = main.bm25.scores
            matrix = {f"matrix_{k}": np.asarray(scores[k]) for k in ("data", "indices", "indptr")}
        buffer = io.BytesIO()
        np.savez(
            buffer,
            ids=main.ids,
            vocab=_json_array(terms),
            tokens=main.flat,
            offsets=main.offsets,
            df=main.df,
            avgdl=np.array(main.avgdl, dtype=np.float64),
            dead=dead,
            delta_ids=np.array(list(delta), dtype=np.int64),
            delta_tokens=_json_array(list(delta.values())),
            **matrix,
        )
        return buffer.getvalue()

    def _deserialise(
        self, file: Path
    ) -> tuple[_Segment, npt.NDArray[np.bool_], dict[int, list[str]]]:
        """The main segment, its tombstones and every live document's tokens a data file
        holds; ValueError when its arrays disagree."""
        with np.load(file, allow_pickle=False) as data:
            ids, flat, offsets = data["ids"], data["tokens"], data["offsets"]
            df, avgdl, dead = data["df"], float(data["avgdl"]), data["dead"]
            terms: Any = json.loads(data["vocab"].tobytes().decode())
            delta_ids = data["delta_ids"]
            delta_tokens: Any = json.loads(data["delta_tokens"].tobytes().decode())
            matrix = (
                {k: data[f"matrix_{k}"] for k in ("data", "indices", "indptr")}
                if ("matrix_data" in data.files)
                else None
            )
        n = len(ids)
        if len(offsets) != n + 1 or offsets[-1] != len(flat) or len(dead) != n:
            raise ValueError("ids, tokens, offsets and tombstones do not agree")
        if not isinstance(terms, list) or len(df) != len(terms):
            raise ValueError("the vocabulary and its document frequencies do not agree")
        if len(flat) and (flat.min() < 0 or flat.max() >= len(terms)):
            raise ValueError("a token id is outside the vocabulary")
        if not isinstance(delta_tokens, list) or len(delta_tokens) != len(delta_ids):
            raise ValueError("the delta's ids and tokens do not agree")
        if (matrix is None) != (not terms) or (
            matrix is not None and len(matrix["indptr"]) != len(terms) + 1
        ):
            raise ValueError("the BM25 matrix does not fit the vocabulary")
        vocab = {t: j for j, t in enumerate(terms)}
        bm25 = None
        if matrix is not None:
            bm25 = bm25s.BM25(k1=self.params.k1, b=self.params.b, method=self.params.method)
            bm25.scores = {**matrix, "num_docs": n}
            bm25.vocab_dict = vocab
            bm25.nonoccurrence_array = None  # Lucene's BM25 has none
        id_list = ids.tolist()
        main = _Segment(
            ids.astype(np.int64),
            {i: r for r, i in enumerate(id_list)},
            vocab,
            df.astype(np.int64),
            avgdl,
            bm25,
            flat.astype(np.int32),
            offsets.astype(np.int64),
        )
        words = np.array(terms, dtype=object)[flat].tolist() if len(flat) else []
        bounds, gone = offsets.tolist(), dead.tolist()
        tokens = {i: words[bounds[r] : bounds[r + 1]] for r, i in enumerate(id_list) if not gone[r]}
        for i, row in zip(delta_ids.tolist(), delta_tokens, strict=True):
            tokens[int(i)] = [str(t) for t in row]
        return main, dead.astype(bool), tokens


def content_digest(documents: Iterable[tuple[int, str]]) -> str:
    """A digest of a set of (id, text), independent of their order: the sum modulo 2**128 of
    a 128-bit BLAKE2b of each; kept up to date write by write by adding and subtracting."""
    return _digest_of(_document_hash(int(i), text) for i, text in documents)


def _document_hash(id: int, text: str) -> int:
    data = id.to_bytes(8, "little", signed=True) + text.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "little")


def _digest_of(hashes: Iterable[int]) -> str:
    return f"{sum(hashes) % (1 << 128):032x}"


def _json_array(value: Any) -> npt.NDArray[np.uint8]:
    return np.frombuffer(json.dumps(value, ensure_ascii=False).encode(), dtype=np.uint8)
