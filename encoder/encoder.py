"""Encoder: texts → pooled sentence vectors with any BERT-family checkpoint."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from baihua.core.errors import BaihuaError, UsageError
from baihua.encoder.batching import length_sorted_batches
from baihua.encoder.fingerprint import model_fingerprint
from baihua.encoder.models import ModelSpec, default_cache_dir, model_path, resolve_model
from baihua.encoder.pooling import check_poolings, pool

TextType = Literal["query", "passage"]
Dtype = Literal["float32", "bfloat16"]


class ModelLoadError(BaihuaError, RuntimeError):
    """The model could not be loaded; the message says from where and what to try."""


@dataclass
class Encoded:
    """Vectors per pooling, in input order, and which inputs hit the token limit."""

    vectors: dict[str, np.ndarray]
    truncated: np.ndarray
    n_tokens: np.ndarray


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def resolve_device(device: str) -> torch.device:
    """`auto` picks CUDA when a GPU is visible, the CPU otherwise."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Encoder:
    """Tokenizer → transformer → pooling, batched by length, results in input order.

    Parameters
    ----------
    model : preset name (`me5-small`), local folder or hub id; or a resolved ModelSpec.
    pooling : default pooling for `encode`; defaults to the preset's.
    max_length : token limit per text, special tokens included; longer texts are truncated and
        reported as such in `Encoded.truncated`.
    dtype : `bfloat16` runs the transformer under autocast (about 2.5× faster on CPUs with
        BF16 support); vectors are returned in float32 either way.
    num_threads : torch's intra-op threads; None leaves torch's default.
    """

    def __init__(
        self,
        model: str | ModelSpec = "me5-small",
        *,
        pooling: str | None = None,
        max_length: int = 64,
        batch_size: int = 32,
        device: str = "auto",
        dtype: Dtype = "float32",
        num_threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.spec = model if isinstance(model, ModelSpec) else resolve_model(model)
        self.pooling = pooling or self.spec.pooling
        check_poolings([self.pooling])
        if max_length < 2:
            raise UsageError(f"max_length must be at least 2, got {max_length}")
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.dtype = dtype
        self.backend = "torch"
        if num_threads:
            torch.set_num_threads(num_threads)
        path = model_path(self.spec, cache_dir)
        self._path, self._cache_dir = path, cache_dir or default_cache_dir()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            # Quiet: the load report calls a missing pooler "newly initialized"; we drop it below.
            with _quiet_transformers():
                transformer, loading_info = AutoModel.from_pretrained(
                    path, output_loading_info=True
                )
        except OSError as err:
            raise ModelLoadError(
                f"cannot load model {self.spec.name!r} from {path!r}: it is not a preset, not a "
                f"local folder, and the hub could not provide it ({err.__class__.__name__})"
            ) from err
        if any(key.startswith("pooler.") for key in loading_info["missing_keys"]):
            transformer.pooler = None  # a randomly initialised pooler must never produce vectors
        self.model = transformer.to(self.device).eval()
        self.dim: int = self.model.config.hidden_size
        self.has_pooler = getattr(self.model, "pooler", None) is not None

    @property
    def name(self) -> str:
        return self.spec.name

    @functools.cached_property
    def fingerprint(self) -> str:
        """Digest of the model's config, tokenizer and weight files (see `fingerprint.py`)."""
        return model_fingerprint(self._path, self._cache_dir)

    def prefix(self, text_type: TextType) -> str:
        return self.spec.query_prefix if text_type == "query" else self.spec.passage_prefix

    def encode(
        self,
        texts: Sequence[str],
        *,
        pooling: str | None = None,
        text_type: TextType = "query",
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """(n, dim) float32 vectors with one pooling."""
        pooling = pooling or self.pooling
        return self.encode_poolings(
            texts, [pooling], text_type=text_type, progress=progress
        ).vectors[pooling]

    def encode_poolings(
        self,
        texts: Sequence[str],
        poolings: Sequence[str],
        *,
        text_type: TextType = "query",
        max_length: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Encoded:
        """Every requested pooling from one forward pass per batch.

        `max_length` overrides the encoder's token limit for this call; `progress` is called
        with the number of texts finished after each batch.
        """
        max_length = max_length or self.max_length
        check_poolings(poolings)
        if "pooler" in poolings and not self.has_pooler:
            raise UsageError(
                f"model {self.name!r} has no pooler layer; use cls, last-avg or first-last-avg"
            )
        prefixed = [self.prefix(text_type) + text for text in texts]
        ids, n_tokens = self._tokenize(prefixed, max_length)
        out = {p: np.empty((len(texts), self.dim), dtype=np.float32) for p in poolings}
        need_all_layers = "first-last-avg" in poolings
        for batch in length_sorted_batches([len(i) for i in ids], self.batch_size):
            pooled = self._forward([ids[i] for i in batch], poolings, need_all_layers)
            for name, vectors in pooled.items():
                out[name][batch] = vectors
            if progress:
                progress(len(batch))
        return Encoded(out, n_tokens > max_length, n_tokens)

    def _tokenize(self, texts: list[str], max_length: int) -> tuple[list[list[int]], np.ndarray]:
        """Token ids cut to max_length, and each text's untruncated token count."""
        if not texts:
            return [], np.zeros(0, dtype=np.int64)
        ids = self.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        n_tokens = np.array([len(i) for i in ids])
        at_limit = np.flatnonzero(n_tokens >= max_length)
        if len(at_limit):
            full = self.tokenizer([texts[i] for i in at_limit])["input_ids"]
            n_tokens[at_limit] = [len(i) for i in full]
        return ids, n_tokens

    @torch.inference_mode()
    def _forward(
        self, ids: list[list[int]], poolings: Sequence[str], need_all_layers: bool
    ) -> dict[str, np.ndarray]:
        input_ids, attention_mask = self._pad(ids)
        with self._autocast():
            output = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                output_hidden_states=need_all_layers,
            )
        hidden = output.hidden_states if need_all_layers else (output.last_hidden_state,)
        pooler_output = getattr(output, "pooler_output", None)
        return {
            name: pool(hidden, attention_mask, name, pooler_output).float().cpu().numpy()
            for name in poolings
        }

    def _pad(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad to the longest sequence of this batch only."""
        width = max(len(i) for i in ids)
        input_ids = torch.full((len(ids), width), self.tokenizer.pad_token_id or 0)
        attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            attention_mask[row, : len(seq)] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.dtype == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()
