"""On-disk cache of sentence vectors, so a grid of transforms or a rerun costs no encoding."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from baihua.core.files import write_atomic
from baihua.core.spec import EmbeddingSpec, check_space

logger = logging.getLogger(__name__)

Encode = Callable[[list[str], list[str]], dict[str, np.ndarray]]


def _save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_atomic(path, buffer.getvalue())


class VectorCache:
    """Vectors of distinct texts in one encoder space and text type, one array per pooling.

    Layout: `<root>/<key>/texts.json` and `<pooling>.npy`, rows aligned with the texts, and
    `specs.json`, the `EmbeddingSpec` of each pooling's vectors. The folder is found by model
    name, dtype, max length, text type (and backend, when not torch); the recorded specs are then
    checked against `spec`, so another model saved under the same name is an error naming the
    fields, not stale vectors. Folders written before specs existed are adopted: their vectors
    are taken to be of `spec` (a warning says so) and the spec is recorded.

    Parameters
    ----------
    spec : the encoder's raw space at the cache's max length; its pooling is replaced by each
        pooling's own.
    text_type : "query" or "passage", the prefix the texts were encoded with.
    """

    def __init__(
        self, root: Path, spec: EmbeddingSpec, *, text_type: str, variant: str = ""
    ) -> None:
        key: dict[str, str | int] = {
            "model": spec.model,
            "dtype": spec.dtype,
            "max_length": spec.max_length,
            "text_type": text_type,
        }
        if spec.backend != "torch":  # keeps the folders of torch vectors written before backends
            key["backend"] = spec.backend
        if variant:  # the int8 recipe: a new one must not reuse the old one's vectors
            key["variant"] = variant
        self.spec = spec.raw
        self.folder = root / hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / "key.json").exists():
            write_atomic(self.folder / "key.json", json.dumps(key).encode())
        self.texts: list[str] = []
        self.rows: dict[str, int] = {}
        self.vectors: dict[str, np.ndarray] = {}
        with self._locked():
            self._load()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the folder's lock: each file is written atomically, but an entry is several
        files, so two processes extending one folder must take turns (read, encode, write)."""
        with open(self.folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> None:
        texts_file = self.folder / "texts.json"
        self.texts = json.loads(texts_file.read_text()) if texts_file.exists() else []
        self.rows = {text: row for row, text in enumerate(self.texts)}
        # Arrays are saved before texts.json: after a crash an array may hold extra rows (cut
        # them) but never fewer unless texts.json was written by a later run (drop that pooling).
        self.vectors = {
            path.stem: vectors[: len(self.texts)]
            for path in self.folder.glob("*.npy")
            if len(vectors := np.load(path)) >= len(self.texts)
        }
        self._check_specs()

    def _spec_of(self, pooling: str) -> EmbeddingSpec:
        return dataclasses.replace(self.spec, pooling=pooling)

    def _check_specs(self) -> None:
        specs_file = self.folder / "specs.json"
        recorded = json.loads(specs_file.read_text()) if specs_file.exists() else {}
        for pooling in self.vectors:
            if pooling in recorded:
                check_space(
                    recorded[pooling],
                    self._spec_of(pooling),
                    what=f"the vector cache {self.folder} ({pooling} vectors)",
                    hint=f"delete {self.folder} to encode again",
                )
        unrecorded = sorted(set(self.vectors) - set(recorded))
        if unrecorded:
            logger.warning(
                "vector cache %s predates vector-space records: taking its %s vectors to be of %s",
                self.folder,
                ", ".join(unrecorded),
                self.spec.summary(),
            )
            self._save_specs()

    def get(
        self, texts: Sequence[str], poolings: Sequence[str], encode: Encode
    ) -> dict[str, np.ndarray]:
        """Vectors for `texts` (any order, duplicates allowed) with each pooling; `encode(texts,
        poolings)` is called only for what the cache lacks."""
        with self._locked():
            self._load()  # another process may have extended the folder since
            return self._get(texts, poolings, encode)

    def _get(
        self, texts: Sequence[str], poolings: Sequence[str], encode: Encode
    ) -> dict[str, np.ndarray]:
        new = list(dict.fromkeys(t for t in texts if t not in self.rows))
        missing = [p for p in poolings if p not in self.vectors]
        if missing and self.texts:
            self.vectors.update(encode(self.texts, missing))
        if new:
            encoded = encode(new, sorted(set(self.vectors) | set(poolings)))
            for pooling, vectors in encoded.items():
                old = self.vectors.get(pooling, np.empty((0, vectors.shape[1]), np.float32))
                self.vectors[pooling] = np.concatenate([old, vectors])
            self.rows.update({text: len(self.texts) + i for i, text in enumerate(new)})
            self.texts = self.texts + new
        if new or missing:
            self._save()
        index = np.fromiter((self.rows[t] for t in texts), dtype=np.int64, count=len(texts))
        return {p: self.vectors[p][index] for p in poolings}

    def _save_specs(self) -> None:
        specs = {pooling: self._spec_of(pooling).to_dict() for pooling in sorted(self.vectors)}
        write_atomic(self.folder / "specs.json", json.dumps(specs).encode())

    def _save(self) -> None:
        # specs.json first: a spec without its array is harmless, an array without one is adopted.
        self._save_specs()
        for pooling, vectors in self.vectors.items():
            _save_npy(self.folder / f"{pooling}.npy", vectors)
        write_atomic(
            self.folder / "texts.json", json.dumps(self.texts, ensure_ascii=False).encode()
        )
