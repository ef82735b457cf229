"""Crash-safe FAISS index snapshots in a store directory.

``snapshot.json`` names the index file and labels file of the last save, their SHA-256 checksums,
the write generation of the documents they match and the id of the store (database) they were
made from; each file is written to a temporary name, fsynced and renamed, and the manifest is
replaced last, so a crash at any point leaves the previous snapshot loadable. A file that changed
after the save (a bit flip, a shuffled labels file) fails its checksum and is not served.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import faiss
import numpy as np
import numpy.typing as npt

from baihua.core.files import write_atomic

logger = logging.getLogger(__name__)

MANIFEST = "snapshot.json"
# The index file is fsynced every this many bytes while it is written, not once at the end: on
# ext4 a commit of the document database (its WAL fsync) waits for the dirty blocks of a file
# being written, so one flush of ~800 MB at the end (HNSW32, 1M x 128) held a payload write,
# and the searches queued behind the database's lock, for 170-350 ms.
SYNC_EVERY_BYTES = 16 << 20


@dataclass(frozen=True)
class Snapshot:
    index: Any  # a CPU FAISS index
    labels: npt.NDArray[np.int64]
    generation: int
    exact_fallback: bool


@dataclass(frozen=True)
class Manifest:
    """What ``snapshot.json`` says; ``store_id`` and ``checksums`` are None in older saves."""

    generation: int
    index: str
    labels: str
    exact_fallback: bool
    store_id: str | None
    checksums: dict[str, str] | None


class SnapshotDamaged(ValueError):
    """The snapshot's files are missing, unreadable or not the ones the manifest names."""


def write_snapshot(path: Path, snapshot: Snapshot, store_id: str) -> None:
    """Write the snapshot's files, then the manifest; drop older snapshots' files."""
    token = uuid.uuid4().hex
    index_name, labels_name = f"index-{token}.faiss", f"labels-{token}.npy"
    write_atomic(path / index_name, lambda p: _write_index(snapshot.index, p))
    write_atomic(path / labels_name, lambda p: np.save(p, snapshot.labels))
    manifest = {
        "generation": snapshot.generation,
        "index": index_name,
        "labels": labels_name,
        "exact_fallback": snapshot.exact_fallback,
        "store_id": store_id,
        "checksums": {name: sha256(path / name) for name in (index_name, labels_name)},
    }
    write_atomic(path / MANIFEST, lambda p: p.write_text(json.dumps(manifest)))
    _remove_stale_files(path, keep={index_name, labels_name})


def _write_index(index: Any, path: Path) -> None:
    """``faiss.write_index`` through a Python file: a full disk raises ``OSError`` (ENOSPC),
    which callers can tell apart, instead of FAISS's RuntimeError. Synced in steps."""
    with open(path, "wb") as file:
        writer = _SyncingWriter(file, SYNC_EVERY_BYTES)
        faiss.write_index(index, faiss.PyCallbackIOWriter(writer))  # type: ignore[attr-defined]


class _SyncingWriter:
    """``file.write`` that fsyncs after every ``every`` bytes (0: never; the caller syncs)."""

    def __init__(self, file: IO[bytes], every: int) -> None:
        self.file = file
        self.every = every
        self.unsynced = 0

    def __call__(self, data: bytes) -> int:
        written = self.file.write(data)
        self.unsynced += written
        if self.every and self.unsynced >= self.every:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.unsynced = 0
        return written


def read_manifest(path: Path) -> Manifest | None:
    """The manifest of the last save; None when there is none or it is unreadable (logged)."""
    if not (path / MANIFEST).exists():
        return None
    try:
        raw = json.loads((path / MANIFEST).read_text())
        return Manifest(
            int(raw["generation"]),
            str(raw["index"]),
            str(raw["labels"]),
            bool(raw["exact_fallback"]),
            raw.get("store_id"),
            raw.get("checksums"),
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("ignoring unreadable %s in %s (%s)", MANIFEST, path, error)
        return None


def read_snapshot(path: Path, manifest: Manifest, dim: int) -> Snapshot:
    """The files the manifest names, checked against its checksums; SnapshotDamaged if not."""
    for name in (manifest.index, manifest.labels):
        if Path(name).name != name:
            raise SnapshotDamaged(f"{MANIFEST} names a file outside the store: {name!r}")
        if manifest.checksums is not None:
            try:
                actual = sha256(path / name)
            except OSError as error:
                raise SnapshotDamaged(f"{name} cannot be read: {error}") from None
            if actual != manifest.checksums.get(name):
                raise SnapshotDamaged(f"{name} changed since it was saved (checksum mismatch)")
    try:
        index = faiss.read_index(str(path / manifest.index))
        labels = np.load(path / manifest.labels, allow_pickle=False)
    except (OSError, ValueError, RuntimeError) as error:
        raise SnapshotDamaged(f"cannot read the index or labels: {error}") from None
    if index.d != dim or index.ntotal != len(labels) or labels.dtype != np.int64:
        raise SnapshotDamaged("index and labels do not match each other or the store's dim")
    return Snapshot(index, labels, manifest.generation, manifest.exact_fallback)


def sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _remove_stale_files(path: Path, keep: set[str]) -> None:
    """Drop index files of older snapshots and temporaries of interrupted saves."""
    for file in path.iterdir():
        stale_snapshot = file.suffix in (".faiss", ".npy") and file.name not in keep
        if stale_snapshot or ".tmp-" in file.name:
            file.unlink(missing_ok=True)
