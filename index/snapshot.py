"""Crash-safe FAISS index snapshots in a store directory.

``snapshot.json`` names the index file and labels file of the last save and the write generation
of the documents they match; each file is written to a temporary name, fsynced and renamed, and
the manifest is replaced last, so a crash at any point leaves the previous snapshot loadable.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from baihua.core.files import write_atomic

logger = logging.getLogger(__name__)

MANIFEST = "snapshot.json"


@dataclass(frozen=True)
class Snapshot:
    index: Any  # a CPU FAISS index
    labels: npt.NDArray[np.int64]
    generation: int
    exact_fallback: bool


def write_snapshot(path: Path, snapshot: Snapshot) -> None:
    """Write the snapshot's files, then the manifest; drop older snapshots' files."""
    token = uuid.uuid4().hex
    index_name, labels_name = f"index-{token}.faiss", f"labels-{token}.npy"
    write_atomic(path / index_name, lambda p: faiss.write_index(snapshot.index, str(p)))
    write_atomic(path / labels_name, lambda p: np.save(p, snapshot.labels))
    manifest = {
        "generation": snapshot.generation,
        "index": index_name,
        "labels": labels_name,
        "exact_fallback": snapshot.exact_fallback,
    }
    write_atomic(path / MANIFEST, lambda p: p.write_text(json.dumps(manifest)))
    _remove_stale_files(path, keep={index_name, labels_name})


def read_snapshot(path: Path, dim: int) -> Snapshot | None:
    """The last saved snapshot, or None when there is none or it cannot be read (logged)."""
    if not (path / MANIFEST).exists():
        return None
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        index = faiss.read_index(str(path / manifest["index"]))
        labels = np.load(path / manifest["labels"])
        if index.d != dim or index.ntotal != len(labels) or labels.dtype != np.int64:
            raise ValueError("index and labels do not match")
        return Snapshot(index, labels, int(manifest["generation"]), manifest["exact_fallback"])
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        logger.warning(
            "ignoring unreadable index snapshot in %s (%s); rebuilding from documents", path, error
        )
        return None


def _remove_stale_files(path: Path, keep: set[str]) -> None:
    """Drop index files of older snapshots and temporaries of interrupted saves."""
    for file in path.iterdir():
        stale_snapshot = file.suffix in (".faiss", ".npy") and file.name not in keep
        if stale_snapshot or ".tmp-" in file.name:
            file.unlink(missing_ok=True)
