"""The OpenVINO backends: the fp32 graph (run in bf16 where the CPU has it) or its NNCF int8
quantisation, on the CPU."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from baihua.core.errors import UsageError
from baihua.encoder.backends.base import default_threads
from baihua.encoder.backends.export import read_meta
from baihua.encoder.backends.openvino_graph import (
    additive_key_mask,
    attention_scale_in_queries,
    bf16_residual_stream,
    drop_softmax_nan_guard,
    gather_before_dequantizing,
    int8_vocabulary_graph,
    release_mapped_pages,
)
from baihua.encoder.pooling import HiddenStates

PRECISIONS = {"float32": "f32", "bfloat16": "bf16"}
# Compiled primitives the CPU plugin keeps per input shape. Its default, 5,000, let a server's
# memory grow ~3.5 MB with every new (batch, width) until then: me5-small int8, 400 random
# shapes, RSS 198 → 1,694 MB; with 16, 588 MB, the same outputs bit for bit, and 6 repeated
# shapes 5 % slower (0 kept: 25 % slower).
RUNTIME_CACHE_CAPACITY = 16
# What a float copy's compile changes in attention (see `attention_scale_in_queries`,
# `additive_key_mask`).
FLOAT_ATTENTION = "attention scale folded into the query projection; additive key mask"
# What the float copy's bf16 run changes (see `int8_vocabulary_table`, `bf16_residual_stream`).
BF16_RECIPE = (
    "bf16: vocabulary table in int8, one scale a row, rows dequantised after lookup; "
    f"residual stream and layer norms in bf16; {FLOAT_ATTENTION}"
)
# Texts of at most this many tokens run on a second compile without the CPU plugin's fused
# attention kernel ("snippets"): on short texts that kernel costs more than the plain
# MatMul-Softmax-MatMul it replaces (me5-small bf16, 2 streams, 1,000 STS-B sentences: 1,250 ->
# 1,520 a second), on long ones it saves much more (passages of 512 tokens: 30.8 against 22.0 a
# second; the two are level at 80-96 tokens). The int8 graph, its attention in float, likewise.
SHORT_TEXT_TOKENS = 64


def stream_config(streams: int) -> dict[str, Any]:
    """OpenVINO's settings for `streams` concurrent requests (0: its own choice for throughput).
    One stream runs each request on every thread: the lowest latency and one set of buffers.
    More streams split the threads and run as many requests at once, which wastes less on the
    synchronisation of small operations: me5-small int8 on 2 cores encodes ~25 % more short
    sentences a second with 2 streams, while a lone request takes ~20 % longer and each stream
    holds its own activation buffers."""
    if streams == 1:
        return {"PERFORMANCE_HINT": "LATENCY"}
    if streams == 0:
        return {"PERFORMANCE_HINT": "THROUGHPUT"}
    return {"NUM_STREAMS": streams}


def cpu_has_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def default_precision() -> str:
    """What the non-int8 parts run in unless told: bf16 where the CPU computes it natively."""
    return "bfloat16" if cpu_has_bf16() else "float32"


class OpenVinoBackend:
    """The graph in `folder` compiled for the CPU, threads set deliberately, one infer request
    per calling thread (a request is not safe to share). `parallel_requests` calling threads
    keep every stream busy (see `stream_config`). A float graph is compiled twice, for short
    texts and for long ones (see `SHORT_TEXT_TOKENS`)."""

    def __init__(
        self,
        folder: Path,
        name: str,
        num_threads: int | None,
        precision: str | None = None,
        streams: int = 1,
    ) -> None:
        import openvino as ov

        meta = read_meta(folder)
        assert meta is not None, f"{folder} is not a complete export"
        precision = precision or default_precision()
        if precision == "bfloat16" and not cpu_has_bf16():
            raise UsageError(
                "this CPU has no bf16 support; use backend openvino with dtype float32"
            )
        self.name = name
        # int8 graphs report int8 (their float parts run in `precision`, named in the variant).
        self.dtype: str = meta["dtype"] if meta["dtype"] == "int8" else precision
        quantization = meta.get("quantization")
        bf16_float_graph = quantization is None and precision == "bfloat16"
        self.variant: str = (
            f"{quantization}; float parts in {precision}"
            if quantization
            else BF16_RECIPE
            if bf16_float_graph
            else FLOAT_ATTENTION
        )
        self.dim: int = meta["dim"]
        self.has_pooler: bool = meta["has_pooler"]
        self.folder = folder
        self.calibration: dict[str, Any] | None = meta.get("calibration")
        self.outputs: list[str] = meta["outputs"]
        config = {
            "INFERENCE_PRECISION_HINT": PRECISIONS[precision],
            "INFERENCE_NUM_THREADS": num_threads or default_threads(),
            "CPU_RUNTIME_CACHE_CAPACITY": RUNTIME_CACHE_CAPACITY,
            **stream_config(streams),
        }
        core = ov.Core()
        if bf16_float_graph:
            model, mapped = int8_vocabulary_graph(folder, meta["model_file"])
            bf16_residual_stream(model)
        else:
            model = core.read_model(str(folder / meta["model_file"]))
            mapped = (folder / meta["model_file"]).with_suffix(".bin")
        if quantization is None:
            attention_scale_in_queries(model)
            additive_key_mask(model)
        gather_before_dequantizing(model)
        drop_softmax_nan_guard(model)
        self.compiled = core.compile_model(model, "CPU", config)
        # compiled from the same graph, the two share its weights; each packs its own copy of
        # them when it first runs (me5-small: ~40 MB in bf16; the int8 server idles ~75 MB higher)
        self.compiled_short = core.compile_model(
            model, "CPU", {**config, "SNIPPETS_MODE": "DISABLE"}
        )
        if mapped is not None:
            # the plugin packs its weights on a compiled model's first run: after that, the
            # mapped originals are only read again for the vocabulary rows looked up
            for compiled in (self.compiled, self.compiled_short):
                run_once(compiled)
            release_mapped_pages(mapped)
        self.parallel_requests = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._local = threading.local()

    def forward(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, *, need_first: bool
    ) -> HiddenStates:
        """Texts of up to `SHORT_TEXT_TOKENS` tokens run on `compiled_short`, longer ones on
        `compiled`: the choice follows each text's own length, never its batch mates', so a
        text gets the same vector in any batch."""
        lengths = attention_mask.sum(axis=1)
        short = lengths <= SHORT_TEXT_TOKENS
        if short.all():
            return self._infer(self.compiled_short, input_ids, attention_mask, need_first)
        if not short.any():
            return self._infer(self.compiled, input_ids, attention_mask, need_first)
        width = int(lengths[short].max())
        parts = (
            self._infer(
                self.compiled_short,
                input_ids[short, :width],
                attention_mask[short, :width],
                need_first,
            ),
            self._infer(self.compiled, input_ids[~short], attention_mask[~short], need_first),
        )
        return merge_rows(parts, (short, ~short), input_ids.shape[1])

    def _infer(
        self,
        compiled: Any,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        need_first: bool,
    ) -> HiddenStates:
        requests = self._local.__dict__.setdefault("requests", {})
        if compiled not in requests:
            requests[compiled] = compiled.create_infer_request()
        results = requests[compiled].infer(
            {"input_ids": input_ids, "attention_mask": attention_mask}
        )
        values = {name: results[compiled.output(name)] for name in self.outputs}
        first = values.get("first_hidden_state") if need_first else None
        pooler = values.get("pooler_output")
        return HiddenStates(
            np.asarray(values["last_hidden_state"], dtype=np.float32),
            None if first is None else np.asarray(first, dtype=np.float32),
            None if pooler is None else np.asarray(pooler, dtype=np.float32),
        )


def run_once(compiled: Any) -> None:
    """One two-token text through `compiled`, which packs its weights on a first run."""
    ids = np.zeros((1, 2), dtype=np.int64)
    compiled.create_infer_request().infer({"input_ids": ids, "attention_mask": np.ones_like(ids)})


def merge_rows(
    parts: tuple[HiddenStates, ...], rows: tuple[np.ndarray, ...], width: int
) -> HiddenStates:
    """One batch's states from parts that each ran some of its `rows` (boolean masks) at their
    own width; per-token states are zero past a part's width, where the attention mask is 0."""

    def merged(arrays: list[np.ndarray | None]) -> np.ndarray | None:
        if any(array is None for array in arrays):
            return None
        out: np.ndarray | None = None
        for array, mask in zip(arrays, rows, strict=True):
            assert array is not None
            if out is None:
                per_token = array.ndim == 3
                shape = (
                    (len(mask), width, *array.shape[2:])
                    if per_token
                    else (len(mask), *array.shape[1:])
                )
                out = np.zeros(shape, dtype=np.float32)
            out[mask, : array.shape[1]] = array
        return out

    last = merged([part.last for part in parts])
    assert last is not None
    return HiddenStates(last, merged([p.first for p in parts]), merged([p.pooler for p in parts]))
