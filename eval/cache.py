"""On-disk cache of sentence vectors, so a grid of transforms or a rerun costs no encoding."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from baihua.core.files import write_atomic

Encode = Callable[[list[str], list[str]], dict[str, np.ndarray]]


def _save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_atomic(path, buffer.getvalue())


class VectorCache:
    """Vectors of distinct texts for one (model, dtype, max length, text type), one array per
    pooling.

    Layout: `<root>/<key>/texts.json` and `<pooling>.npy`, rows aligned with the texts.
    """

    def __init__(
        self, root: Path, *, model: str, dtype: str, max_length: int, text_type: str
    ) -> None:
        key = {"model": model, "dtype": dtype, "max_length": max_length, "text_type": text_type}
        self.folder = root / hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "key.json").write_text(json.dumps(key))
        texts_file = self.folder / "texts.json"
        self.texts: list[str] = json.loads(texts_file.read_text()) if texts_file.exists() else []
        self.rows = {text: row for row, text in enumerate(self.texts)}
        # Arrays are saved before texts.json: after a crash an array may hold extra rows (cut
        # them) but never fewer unless texts.json was written by a later run (drop that pooling).
        self.vectors = {
            path.stem: vectors[: len(self.texts)]
            for path in self.folder.glob("*.npy")
            if len(vectors := np.load(path)) >= len(self.texts)
        }

    def get(
        self, texts: Sequence[str], poolings: Sequence[str], encode: Encode
    ) -> dict[str, np.ndarray]:
        """Vectors for `texts` (any order, duplicates allowed) with each pooling; `encode(texts,
        poolings)` is called only for what the cache lacks."""
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

    def _save(self) -> None:
        for pooling, vectors in self.vectors.items():
            _save_npy(self.folder / f"{pooling}.npy", vectors)
        write_atomic(
            self.folder / "texts.json", json.dumps(self.texts, ensure_ascii=False).encode()
        )
