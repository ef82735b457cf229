"""Encoder: texts → pooled sentence vectors with any BERT-family checkpoint."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from baihua.core.errors import UsageError
from baihua.core.progress import Progress
from baihua.encoder.backends import Backends, Int8Recipe, ModelLoadError, check_backend
from baihua.encoder.batching import length_sorted_batches, pad, split_for_streams
from baihua.encoder.dense import Dense
from baihua.encoder.fingerprint import model_fingerprint, model_folder
from baihua.encoder.models import (
    ModelSpec,
    default_cache_dir,
    model_path,
    resolve_model,
    with_st_config,
)
from baihua.encoder.pooling import check_poolings, needs_first_layer, parse_pooling, pool
from baihua.encoder.st_folder import StFolder, is_st_folder, read_st_folder
from baihua.encoder.tokenizer import TextTokenizer

TextType = Literal["query", "passage"]
TruncationSide = Literal["right", "left"]
Dtype = Literal["float32", "bfloat16", "int8"]
DEFAULT_MAX_LENGTH = 64  # when neither the caller nor the model names a token limit
NVIDIA_GPUS = "/proc/driver/nvidia/gpus"  # one folder per GPU the driver sees


@dataclass
class Encoded:
    """Vectors per pooling, in input order, and which inputs hit the token limit."""

    vectors: dict[str, np.ndarray]
    truncated: np.ndarray
    n_tokens: np.ndarray


def resolve_device(device: str) -> str:
    """`auto` picks CUDA when a GPU is visible, the CPU otherwise. torch is asked only where the
    NVIDIA driver is loaded, so a CPU process serving an ONNX or OpenVINO backend never imports
    it."""
    if device != "auto":
        return device
    if not Path(NVIDIA_GPUS).is_dir() or importlib.util.find_spec("torch") is None:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Encoder:
    """Tokenizer → backend → pooling → the model's own steps, batched by length, results in
    input order. A sentence-transformers folder runs as its `modules.json` says (see
    `st_folder.py`): its Dense and Normalize modules follow the pooling, with every backend (they
    run in torch on the pooled vectors, after the transformer).

    Parameters
    ----------
    model : preset name (`me5-small`), local folder or hub id; or a resolved ModelSpec.
    pooling : default pooling for `encode`; defaults to the preset's.
    max_length : token limit per text, special tokens included; longer texts are truncated and
        reported as such in `Encoded.truncated`. None: the model's (its preset's, or its
        sentence-transformers folder's `max_seq_length`), else 64.
    batch_size, max_batch_tokens : a batch holds at most `batch_size` texts and at most
        `max_batch_tokens` padded tokens, so a few long texts never pad a whole batch.
    backend : `torch`, `onnx` (ONNX Runtime fp32), `onnx-int8` (dynamic int8), `openvino`
        (OpenVINO, bf16 where the CPU has it), `openvino-int8` (NNCF static int8), or `auto`: the
        fastest of them on this machine whose vectors keep min cosine ≥ 0.99 to fp32 torch on a
        fixed calibration set (measured once, stored beside the model's exports).
    dtype : for `torch` and `openvino`, `float32` or `bfloat16`; None: the backend's own. Vectors
        are float32 either way.
    num_threads : intra-op threads of torch, ONNX Runtime and OpenVINO; None: the CPUs this
        process may run on (torch keeps its own default).
    streams : OpenVINO requests run at once, sharing `num_threads`: 1 answers a lone call
        fastest and holds one set of buffers; 2 or more, or 0 for OpenVINO's own throughput
        choice, encode more texts a second, in bulk (the batches of one `encode` call run side
        by side) and in a server (concurrent calls run side by side). Other backends run one
        request at a time: more than 1 is refused.

    Attributes
    ----------
    backend : the backend that runs (never `auto`); dtype : its compute dtype; variant : what
        else decides its vectors (the int8 recipe), "" for none.
    """

    def __init__(
        self,
        model: str | ModelSpec = "me5-small",
        *,
        pooling: str | None = None,
        max_length: int | None = None,
        batch_size: int = 32,
        max_batch_tokens: int = 4096,
        device: str = "auto",
        backend: str = "torch",
        dtype: Dtype | None = None,
        num_threads: int | None = None,
        streams: int = 1,
        cache_dir: Path | None = None,
    ) -> None:
        spec = model if isinstance(model, ModelSpec) else resolve_model(model)
        check_backend(backend, dtype, resolve_device(device))
        path = model_path(spec, cache_dir)
        self.folder = folder = model_folder(path)
        # a hub model's sentence-transformers files arrive with model_path
        self.spec = with_st_config(spec, folder)
        self.st: StFolder | None = read_st_folder(folder) if is_st_folder(folder) else None
        self.pooling = pooling or self.spec.pooling
        check_poolings([self.pooling])
        max_length = max_length or self.spec.max_length or DEFAULT_MAX_LENGTH
        if max_length < 2:
            raise UsageError(f"max_length must be at least 2, got {max_length}")
        if streams < 0:
            raise UsageError(f"streams must be 0 (OpenVINO's choice) or more, got {streams}")
        if max_batch_tokens < max_length:
            raise UsageError(
                f"max_batch_tokens ({max_batch_tokens}) must be at least max_length ({max_length})"
            )
        self.max_length = max_length
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.device = resolve_device(device)
        self._path, self._cache_dir = path, Path(cache_dir) if cache_dir else default_cache_dir()
        transformer = str(self.st.transformer) if self.st else path
        try:
            self.tokenizer = TextTokenizer.from_pretrained(transformer)
        except OSError as err:
            raise ModelLoadError(
                f"cannot load model {self.spec.name!r} from {path!r}: it is not a preset, not a "
                f"local folder, and the hub could not provide it ({err.__class__.__name__})"
            ) from err
        if self.st and self.st.lower_case:
            self.tokenizer.lower_case()
        backends = Backends(
            self.spec.name,
            transformer,
            cache_dir=self._cache_dir,
            tokenizer=self.tokenizer,
            device=self.device,
            num_threads=num_threads,
            prefix=self.spec.query_prefix,
            streams=streams,
            int8_recipe=Int8Recipe(
                self.spec.int8_float_ffn_layers, self.spec.int8_smooth_quant_alpha
            ),
        )
        self.runner = backends.open(backend, dtype)
        if streams > 1 and self.runner.parallel_requests == 1:
            raise UsageError(
                f"streams={streams} needs an OpenVINO backend; {self.runner.name} runs one "
                "request at a time (set streams to 1)"
            )
        self._streams = (
            ThreadPoolExecutor(self.runner.parallel_requests, thread_name_prefix="encoder-stream")
            if self.runner.parallel_requests > 1
            else None
        )
        self.backend: str = self.runner.name
        self.dtype: str = self.runner.dtype
        self.variant: str = self.runner.variant
        self.has_pooler: bool = self.runner.has_pooler
        self.dim: int = self.output_dim(self.pooling)

    def output_dim(self, pooling: str) -> int:
        """The dimension of `pooling`'s vectors after the model's own steps (Dense layers)."""
        pooled = parse_pooling(pooling).dim(self.runner.dim)
        if self.st is None:
            return pooled
        for step in self.st.steps:
            if isinstance(step, Dense):
                if step.in_features != pooled:
                    raise UsageError(
                        f"model {self.name!r}: its Dense layer takes {step.in_features} dims, "
                        f"pooling {pooling!r} gives {pooled}; use the model's own pooling "
                        f"({self.spec.pooling})"
                    )
                pooled = step.out_features
        return pooled

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
        progress: Progress | None = None,
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
        truncation_side: TruncationSide = "right",
        progress: Progress | None = None,
    ) -> Encoded:
        """Every requested pooling from one forward pass per batch.

        `max_length` overrides the encoder's token limit for this call; a text over it loses
        its end, or with `truncation_side="left"` its start (the prefix is kept); `progress` is
        called with the number of texts finished after each batch.
        """
        max_length = max_length or self.max_length
        check_poolings(poolings)
        if any("pooler" in parse_pooling(p).modes for p in poolings) and not self.has_pooler:
            raise UsageError(
                f"model {self.name!r} has no pooler layer; use cls, last-avg or first-last-avg"
            )
        prefix = self.prefix(text_type)
        ids, n_tokens = self.tokenizer.encode([prefix + text for text in texts], max_length)
        if truncation_side == "left":
            ids = self._cut_starts(texts, prefix, ids, n_tokens, max_length)
        out = {p: np.empty((len(texts), self.output_dim(p)), dtype=np.float32) for p in poolings}
        need_first = needs_first_layer(poolings)
        prompt_length = self._prompt_length(prefix)
        max_tokens = max(self.max_batch_tokens, max_length)
        lengths = [len(i) for i in ids]

        def forward(batch: list[int]) -> tuple[list[int], dict[str, np.ndarray]]:
            return batch, self._forward(
                [ids[i] for i in batch], poolings, need_first, prompt_length
            )

        batches = length_sorted_batches(lengths, self.batch_size, max_tokens)
        done: Iterator[tuple[list[int], dict[str, np.ndarray]]]
        if self._streams is None:
            done = map(forward, batches)
        else:
            streams = self.runner.parallel_requests
            done = self._streams.map(forward, split_for_streams(batches, streams))
        for batch, pooled in done:
            for name, vectors in pooled.items():
                out[name][batch] = vectors
            if progress:
                progress(len(batch))
        return Encoded(out, n_tokens > max_length, n_tokens)

    def _cut_starts(
        self,
        texts: Sequence[str],
        prefix: str,
        ids: list[list[int]],
        n_tokens: np.ndarray,
        max_length: int,
    ) -> list[list[int]]:
        """Re-cut the texts over the limit at their start: keep the leading special tokens and
        the prefix's tokens, then as many of the text's last tokens as fit (before the closing
        special tokens). Token offsets tell prefix, text and special tokens apart."""
        long = np.flatnonzero(n_tokens > max_length).tolist()
        if not long:
            return ids
        ids = list(ids)
        for i in long:
            full = self.tokenizer.encode_one(prefix + texts[i])
            tokens, offsets, special = full.ids, full.offsets, full.special_tokens_mask
            head = 0
            while head < len(tokens) and (special[head] or offsets[head][0] < len(prefix)):
                head += 1
            tail = len(tokens)
            while tail > head and special[tail - 1]:
                tail -= 1
            room = max(max_length - head - (len(tokens) - tail), 0)
            ids[i] = tokens[:head] + tokens[tail - room : tail] + tokens[tail:]
        return ids

    def _prompt_length(self, prefix: str) -> int:
        """Leading tokens a `:no-prompt` pooling leaves out: [CLS] and the prefix's tokens (the
        prefix tokenised alone, less a closing special token), as sentence-transformers counts."""
        if not prefix:
            return 0
        [ids], _ = self.tokenizer.encode([prefix], self.max_length)
        return len(ids) - (1 if ids and ids[-1] in self.tokenizer.special_ids else 0)

    def _forward(
        self, ids: list[list[int]], poolings: Sequence[str], need_first: bool, prompt_length: int
    ) -> dict[str, np.ndarray]:
        input_ids, attention_mask = pad(ids, self.tokenizer.pad_id)
        states = self.runner.forward(input_ids, attention_mask, need_first=need_first)
        out = {}
        for name in poolings:
            vectors = pool(states, attention_mask, name, prompt_length)
            for step in self.st.steps if self.st else ():
                vectors = step(vectors)
            out[name] = vectors
        return out
