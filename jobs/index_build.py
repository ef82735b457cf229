"""The offline index build: corpus → pipeline (passages) → store, resumable and idempotent."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baihua.core.files import write_atomic
from baihua.core.iteration import chunked
from baihua.core.progress import Progress
from baihua.core.spec import check_space
from baihua.encoder import EmbeddingPipeline
from baihua.encoder.corpus import CorpusError, iter_corpus_records
from baihua.index import Store


@dataclass
class IndexBuildJob:
    """Corpus → pipeline (passages) → store, resumable and idempotent.

    Ids come from a JSONL record's `id`, else the sentence's position in the corpus, and every
    chunk is upserted: rerunning after a crash or on the same corpus never duplicates documents.
    `progress_file` records the corpus, the pipeline's `EmbeddingSpec` and how far the last run
    got, so a rerun skips that part; a rerun in another space is refused. It is the job's, not
    the store's (a store need not live in a local folder).
    """

    corpus: Path
    store: Store
    pipeline: EmbeddingPipeline
    progress_file: Path
    chunk_size: int = 1024

    def done(self) -> int:
        """Documents a previous run of this job already stored (0 for another corpus: that is a
        new job); SpecMismatchError if that run embedded in another space."""
        if not self.progress_file.is_file():
            return 0
        record = json.loads(self.progress_file.read_text())
        if "identity" in record:  # written before specs: corpus and model name only
            record |= {"corpus": record["identity"]["corpus"]}
            record |= {"spec": {"model": record["identity"]["model"]}}
        if record["corpus"] != str(self.corpus.resolve()):
            return 0
        check_space(
            record["spec"],
            self.pipeline.spec,
            what=f"the index build recorded in {self.progress_file}",
            hint="rerun with the model and whitening it was started with, or rebuild the index "
            "in the new space with `baihua index reembed`",
        )
        return int(record["documents_done"])

    def run(self, progress: Progress | None = None) -> int:
        """Store every document; returns how many the corpus holds."""
        done = self.done()
        documents = itertools.islice(corpus_documents(self.corpus), done, None)
        for chunk in chunked(documents, self.chunk_size):
            ids, texts, payloads = zip(*chunk, strict=True)
            vectors = self.pipeline.embed(list(texts), text_type="passage", progress=progress)
            self.store.upsert(list(ids), vectors.vectors, list(texts), list(payloads))
            done += len(chunk)
            record = {
                "corpus": str(self.corpus.resolve()),
                "spec": self.pipeline.spec.to_dict(),
                "documents_done": done,
            }
            write_atomic(self.progress_file, json.dumps(record).encode())
        self.store.save()
        return done


def corpus_documents(corpus: Path) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(id, text, payload) per sentence: JSONL's `id` and `payload` fields (else the other
    fields), or the sentence's position for plain and TSV corpora."""
    position = 0
    for line_no, texts, record in iter_corpus_records(corpus):
        for text in texts:
            doc_id = record.get("id", position)
            if not isinstance(doc_id, int) or isinstance(doc_id, bool) or doc_id < 0:
                raise CorpusError(f"{corpus}:{line_no}: id must be a non-negative integer")
            payload = record.get("payload")
            if payload is None:
                payload = {k: v for k, v in record.items() if k not in ("id", "text")}
            yield doc_id, text, payload
            position += 1
