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
from baihua.encoder.pooling import HiddenStates

PRECISIONS = {"float32": "f32", "bfloat16": "bf16"}
# Compiled primitives the CPU plugin keeps per input shape. Its default, 5,000, let a server's
# memory grow ~3.5 MB with every new (batch, width) until then: me5-small int8, 400 random
# shapes, RSS 198 → 1,694 MB; with 16, 588 MB, the same outputs bit for bit, and 6 repeated
# shapes 5 % slower (0 kept: 25 % slower).
RUNTIME_CACHE_CAPACITY = 16
# What the float copy's bf16 run does to the vocabulary table (see `int8_vocabulary_table`).
BF16_VOCABULARY = "bf16: vocabulary table in int8, one scale a row, rows dequantised after lookup"


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
    """One compiled model over `folder/model.xml`, threads set deliberately, one infer request
    per calling thread (a request is not safe to share). `parallel_requests` calling threads
    keep every stream busy (see `stream_config`)."""

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
        int8_table = quantization is None and precision == "bfloat16"
        self.variant: str = ""
        if quantization:
            self.variant = f"{quantization}; float parts in {precision}"
        elif int8_table:
            self.variant = BF16_VOCABULARY
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
        # read into memory rather than mapped, so the fp32 table replaced below is freed
        core.set_property({"ENABLE_MMAP": not int8_table})
        model = core.read_model(str(folder / meta["model_file"]))
        gather_before_dequantizing(model)
        if int8_table:
            int8_vocabulary_table(model)
        self.compiled = core.compile_model(model, "CPU", config)
        self.parallel_requests = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._local = threading.local()

    def forward(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, *, need_first: bool
    ) -> HiddenStates:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        results = request.infer({"input_ids": input_ids, "attention_mask": attention_mask})
        values = {name: results[self.compiled.output(name)] for name in self.outputs}
        first = values.get("first_hidden_state") if need_first else None
        pooler = values.get("pooler_output")
        return HiddenStates(
            np.asarray(values["last_hidden_state"], dtype=np.float32),
            None if first is None else np.asarray(first, dtype=np.float32),
            None if pooler is None else np.asarray(pooler, dtype=np.float32),
        )


def gather_before_dequantizing(model: Any) -> int:
    """Look up embedding rows in the int8 table, then dequantize the rows: NNCF leaves
    ``Gather(Convert(table_i8) * scale, ids)``, which the CPU plugin folds into a float copy of
    the whole table at compile time (me5-small: 250,037 x 384, compiled RSS 633 MB against 175 MB
    this way). The same products of the same numbers, so the vectors are bit-identical. Returns
    how many lookups were rewritten."""
    rewritten = 0
    for gather in model.get_ops():
        if gather.get_type_name() != "Gather":
            continue
        table = gather.input_value(0).get_node()
        if table.get_type_name() != "Multiply":
            continue
        convert, scale = (table.input_value(i).get_node() for i in (0, 1))
        if convert.get_type_name() != "Convert" or scale.get_type_name() != "Constant":
            continue
        weights = convert.input_value(0).get_node()
        if weights.get_type_name() != "Constant" or scale.get_output_partial_shape(0).rank != 2:
            continue
        lookup = dequantized_lookup(weights, scale, gather, convert.get_output_element_type(0))
        gather.output(0).replace(lookup)
        rewritten += 1
    return rewritten


def int8_vocabulary_table(model: Any) -> int:
    """Keep the vocabulary table (the lookup indexed by `input_ids`) in int8 with one scale a
    row, and dequantize the rows looked up. The CPU plugin gathers from the fp32 table even when
    it runs in bf16, so a bf16 server held it whole (me5-small: 250,037 x 384; the idle server
    973 MB, 702 MB this way, by bench/serve_memory.py); int8 rows differ from fp32 by less than
    bf16's own rounding of what follows (its vectors stay ≥ 0.9999 to fp32). Position and
    token-type tables are small and stay float. Returns how many lookups were rewritten."""
    import openvino.opset13 as ops

    rewritten = 0
    for gather in model.get_ops():
        if gather.get_type_name() != "Gather" or not looks_up_input_ids(gather):
            continue
        table = gather.input_value(0).get_node()
        if table.get_type_name() != "Constant" or table.get_output_partial_shape(0).rank != 2:
            continue
        codes, scale = int8_rows(np.asarray(table.get_data(), dtype=np.float32))
        lookup = dequantized_lookup(ops.constant(codes), ops.constant(scale), gather, "f32")
        gather.output(0).replace(lookup)
        rewritten += 1
    return rewritten


def int8_rows(weights: np.ndarray, rows_at_once: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Each row as int8 codes and one float scale (max |w| / 127), a block of rows at a time:
    whole-table temporaries (384 MB each for me5-small) took 1-3 s to fault in, blocks 0.15 s."""
    codes = np.empty(weights.shape, dtype=np.int8)
    scale = np.empty((len(weights), 1), dtype=np.float32)
    for start in range(0, len(weights), rows_at_once):
        rows = slice(start, start + rows_at_once)
        block = np.abs(weights[rows])
        scale[rows] = np.maximum(block.max(axis=1, keepdims=True), 1e-12) / 127
        np.divide(weights[rows], scale[rows], out=block)
        codes[rows] = np.rint(block, out=block)
    return codes, scale


def dequantized_lookup(codes: Any, scale: Any, gather: Any, float_type: Any) -> Any:
    """`gather`'s rows taken from the int8 `codes` and their `scale`s, then multiplied: the
    lookup in int8, the product in float."""
    import openvino.opset13 as ops

    ids, axis = gather.input_value(1), gather.input_value(2)
    rows = ops.convert(ops.gather(codes.output(0), ids, axis), float_type)
    return ops.multiply(rows, ops.gather(scale.output(0), ids, axis)).output(0)


def looks_up_input_ids(gather: Any) -> bool:
    """Whether a Gather's indices are the `input_ids` parameter (through Converts)."""
    node = gather.input_value(1).get_node()
    while node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node.get_type_name() == "Parameter" and "input_ids" in node.output(0).get_names()
