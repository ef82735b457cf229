"""`baihua index reembed`: the index's documents encoded again in another vector space, then
switched in with one atomic rename.

The store keeps every document's text, so an index built with one model or transform never has to
be thrown away. The job reads the documents of `<data>/index` through a read-only connection —
a running server keeps serving the old index meanwhile — and writes the new vectors to
`<data>/index.reembed`, recording the target `EmbeddingSpec` and the last id done in
`<data>/reembed-progress.json` after each chunk, so an interrupted run resumes where it stopped.
To switch, the job needs the old index to itself: it takes the index's lock (a server that still
holds it is named, and a rerun after stopping it only catches up), re-embeds the documents added,
changed or deleted since, and exchanges the two folders atomically. The old index stays in
`<data>/index.previous` until the next switch.

A run killed after announcing its switch but before the exchange leaves the old index in place,
where a restarted server may write again: the rerun sees that (by the store ids the announcement
recorded) and catches up once more before it switches. The new index never hands out an id the
old one handed out (its id counter starts at the old one's).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from baihua.core.errors import UsageError
from baihua.core.files import fsync_dir, write_atomic
from baihua.core.progress import Progress
from baihua.core.spec import check_space
from baihua.encoder import EmbeddingPipeline
from baihua.index import FaissStore, StoreLockedError
from baihua.index.database import read_documents, read_meta
from baihua.index.faiss_index import FaissIndex
from baihua.index.locks import lock_directory
from baihua.index.store import Document

_DOCUMENTS = "documents.sqlite"


class ReembedPendingError(StoreLockedError):
    """The documents are re-embedded but the old index is still open elsewhere, so the switch
    waits for a rerun."""


@dataclass
class ReembedJob:
    """Re-encode the documents of `<data_dir>/index` into `pipeline`'s space; resumable.

    Parameters
    ----------
    data_dir : the service's data folder.
    pipeline : the target space (model, pooling, transform...).
    factory : FAISS index_factory string of the new index.
    search_params : FAISS search settings of the new index (its efConstruction shapes the graph
        the documents are added to).
    chunk_size : documents per encoded chunk and progress record.
    """

    data_dir: Path
    pipeline: EmbeddingPipeline
    factory: str = "Flat"
    search_params: str = ""
    chunk_size: int = 1024

    def __post_init__(self) -> None:
        # the new index's factory and search params, refused before anything is encoded
        FaissIndex(self.pipeline.dim, self.factory, use_gpu=False, search_params=self.search_params)

    @property
    def source(self) -> Path:
        return self.data_dir / "index"

    @property
    def target(self) -> Path:
        return self.data_dir / "index.reembed"

    @property
    def previous(self) -> Path:
        return self.data_dir / "index.previous"

    @property
    def progress_file(self) -> Path:
        return self.data_dir / "reembed-progress.json"

    def total(self) -> int:
        """Documents in the index being re-embedded (in the new one, when a switch stopped
        between its two renames and left no old one)."""
        if not (self.source / _DOCUMENTS).is_file() and (self.target / _DOCUMENTS).is_file():
            return _count(self.target)
        self._check_source()
        return _count(self.source)

    def done(self) -> int:
        """Documents a previous run already re-embedded; SpecMismatchError if it aimed at
        another space."""
        record = self._progress()
        return 0 if record is None else int(record["documents_done"])

    def run(self, progress: Progress | None = None) -> int:
        """Re-embed, catch up and switch; returns the number of documents in the new index.

        Raises ReembedPendingError, with everything encoded so far kept, when another process
        holds the old index.
        """
        record = self._progress()
        if record is not None and record["state"] == "switching" and self._switch_begun(record):
            # An earlier run stopped after the switch moved a folder: finish it.
            lock = (
                self._lock_source(int(record["documents_done"])) if self.source.exists() else None
            )
            try:
                return self._switch(record)
            finally:
                if lock is not None:
                    lock.close()
        # Otherwise the old index is still in place and may have taken writes since (a server
        # started after a run stopped): catch up again, then switch.
        self._check_source()
        if self._source_spec() == self.pipeline.spec.to_dict():
            raise UsageError(
                f"the index at {self.source} is already in this space "
                f"({self.pipeline.spec.summary()}); nothing to re-embed"
            )
        last = -1 if record is None else int(record["last_id"])
        done = 0 if record is None else int(record["documents_done"])
        with self._open_target() as store:
            for page in read_documents(self.source / _DOCUMENTS, self.chunk_size, after=last):
                self._embed_into(store, page, progress)
                done, last = done + len(page), page[-1].id
                self._record("encoding", last, done)
            lock = self._lock_source(done)
            try:
                self._catch_up(store)
                store.save()
            except BaseException:
                lock.close()
                raise
        try:
            stores = {"old_store": _store_id(self.source), "new_store": _store_id(self.target)}
            record = self._record("switching", last, done, **stores)
            return self._switch(record)
        finally:
            lock.close()

    # ------------------------------------------------------------------------------- internals

    def _check_source(self) -> None:
        if not (self.source / _DOCUMENTS).is_file():
            raise UsageError(
                f"no index at {self.source}: build one first (`baihua index build`) or point "
                "--data-dir at the service's data folder"
            )

    def _source_spec(self) -> dict[str, Any] | None:
        recorded = read_meta(self.source / _DOCUMENTS).get("spec")
        return None if recorded is None else dict(json.loads(recorded))

    def _progress(self) -> dict[str, Any] | None:
        if not self.progress_file.is_file():
            return None
        record = json.loads(self.progress_file.read_text())
        check_space(
            record["spec"],
            self.pipeline.spec,
            what=f"the re-embedding recorded in {self.progress_file}",
            hint="rerun with the model and whitening it was started with, or delete "
            f"{self.progress_file} and {self.target} to start over",
        )
        return dict(record)

    def _record(self, state: str, last: int, done: int, **stores: str) -> dict[str, Any]:
        """Write the progress; a switch records the store ids of the old and the new index
        (``old_store``, ``new_store``), which tell a rerun how far it got."""
        record = {
            "spec": self.pipeline.spec.to_dict(),
            "state": state,
            "last_id": last,
            "documents_done": done,
        } | stores
        write_atomic(self.progress_file, json.dumps(record).encode())
        return record

    def _switch_begun(self, record: dict[str, Any]) -> bool:
        """Whether the switch ``record`` announced moved a folder already: the old index is no
        longer at `<data>/index`. A record without store ids (an older version's) is judged by
        the space of what is there."""
        if not (self.source / _DOCUMENTS).is_file():
            return True  # a two-rename switch stopped between its renames
        if "old_store" not in record:
            return self._source_spec() == self.pipeline.spec.to_dict()
        there = _store_id(self.source)
        if there == record["new_store"]:
            return True
        if there == record["old_store"]:
            return False
        raise UsageError(
            f"{self.source} holds another index than the one `baihua index reembed` was "
            f"switching from or to (store {there}; expected {record['old_store']} or "
            f"{record['new_store']}): it was created while the switch was stopped halfway. "
            f"The re-embedded index is in {self.target}, the old one in {self.previous}; move "
            f"the index to keep to {self.source} and delete {self.progress_file}"
        )

    def _open_target(self) -> FaissStore:
        if self._progress() is None:
            shutil.rmtree(self.target, ignore_errors=True)  # leftovers of an unrecorded start
        return FaissStore.open(
            self.target,
            dim=self.pipeline.dim,
            factory=self.factory,
            search_params=self.search_params,
            spec=self.pipeline.spec,
        )

    def _embed_into(
        self, store: FaissStore, documents: Sequence[Document], progress: Progress | None
    ) -> None:
        texts = [d.text for d in documents]
        vectors = self.pipeline.embed(texts, text_type="passage", progress=progress).vectors
        store.upsert([d.id for d in documents], vectors, texts, [d.payload for d in documents])

    def _lock_source(self, done: int) -> IO[bytes]:
        try:
            return lock_directory(self.source)
        except StoreLockedError:
            raise ReembedPendingError(
                self.source,
                f"re-embedded {done} documents into {self.target}, but the index at "
                f"{self.source} is open in another process (a running server?); stop it and "
                "rerun `baihua index reembed` with the same settings to switch (only documents "
                "changed since are re-embedded)",
            ) from None

    def _catch_up(self, store: FaissStore) -> None:
        """Bring the new index to the old one's documents as they are now (the old index is
        locked): writes made while the encoding ran are re-embedded or deleted."""
        stale, gone = _differences(
            _flat(read_documents(self.source / _DOCUMENTS, self.chunk_size)),
            _flat(read_documents(self.target / _DOCUMENTS, self.chunk_size)),
        )
        if gone:
            store.delete(gone)
        for start in range(0, len(stale), self.chunk_size):
            self._embed_into(store, stale[start : start + self.chunk_size], None)
        # ids the old index handed out, deleted ones included, are never handed out again
        used = int(read_meta(self.source / _DOCUMENTS).get("next_id", 0))
        if used:
            store.reserve_ids(1, after=used - 2)

    def _switch(self, record: dict[str, Any]) -> int:
        """Exchange the folders (or finish a switch an earlier run began), keep the old index as
        `index.previous`, forget the progress; the caller holds the old index's lock."""
        if self.target.exists():
            if self.source.exists() and self._switch_begun(record):
                _replace(self.target, self.previous)  # exchanged already: target is the old one
            elif self.source.exists():
                if _exchange(self.target, self.source):
                    _replace(self.target, self.previous)
                else:
                    _replace(self.source, self.previous)
                    os.rename(self.target, self.source)
            else:
                os.rename(self.target, self.source)  # a two-rename switch stopped halfway
        fsync_dir(self.data_dir)
        self.progress_file.unlink(missing_ok=True)
        return _count(self.source)


def _store_id(folder: Path) -> str:
    return read_meta(folder / _DOCUMENTS)["store_id"]


def _count(folder: Path) -> int:
    return sum(len(page) for page in read_documents(folder / _DOCUMENTS, 4096))


def _replace(folder: Path, destination: Path) -> None:
    shutil.rmtree(destination, ignore_errors=True)
    os.rename(folder, destination)


def _flat(pages: Iterator[list[Document]]) -> Iterator[Document]:
    for page in pages:
        yield from page


def _differences(
    source: Iterator[Document], target: Iterator[Document]
) -> tuple[list[Document], list[int]]:
    """Both in id order: the source documents the target lacks or holds with another text or
    payload, and the ids only the target holds."""
    stale: list[Document] = []
    gone: list[int] = []
    have = next(target, None)
    for doc in source:
        while have is not None and have.id < doc.id:
            gone.append(have.id)
            have = next(target, None)
        if have is not None and have.id == doc.id:
            if (have.text, have.payload) != (doc.text, doc.payload):
                stale.append(doc)
            have = next(target, None)
        else:
            stale.append(doc)
    while have is not None:
        gone.append(have.id)
        have = next(target, None)
    return stale, gone


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (Linux renameat2 RENAME_EXCHANGE); False where the system or
    file system cannot (the caller then renames twice, which a rerun finishes after a crash)."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_cwd = -100
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a))
