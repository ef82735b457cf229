"""Rewrites of an OpenVINO graph before it is compiled, and the rewritten copy a bf16 run maps
from disk."""

from __future__ import annotations

import contextlib
import ctypes
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

# What a bf16 run of the float graph reads: that graph with its vocabulary table in int8 (see
# `int8_vocabulary_table`), written beside it on first use.
INT8_VOCABULARY_IR = "model-int8-vocabulary.xml"
MADV_DONTNEED = 4
# The CPU plugin's flag (a node's runtime info) for "run in bf16 even in the graph's tail".
BF16_IN_TAIL = "enforceBF16evenForGraphTail"
# The residual stream: the sums, layer norms and the products that scale them.
RESIDUAL_STREAM_OPS = ("Add", "MVN", "Multiply")


def int8_vocabulary_graph(folder: Path, model_file: str) -> tuple[Any, Path | None]:
    """`folder`'s float graph with the vocabulary in int8, and the weights file it is mapped
    from. The rewritten graph is written once as an IR beside the fp32 one, so that later runs
    map it instead of rewriting the fp32 table in memory, and hold only the pages they touch.
    Where the folder cannot be written (a read-only image) the graph rewritten in memory is
    returned, with None for the file."""
    import openvino as ov

    target = folder / INT8_VOCABULARY_IR
    if not target.exists():
        core = ov.Core()
        # read into memory rather than mapped, so the fp32 table replaced below is freed
        core.set_property({"ENABLE_MMAP": False})
        model = core.read_model(str(folder / model_file))
        int8_vocabulary_table(model)
        if not save_atomically(model, target):
            return model, None
    return ov.Core().read_model(str(target)), target.with_suffix(".bin")


def save_atomically(model: Any, target: Path) -> bool:
    """Write `model` as the IR `target` through temporary siblings renamed into place, the
    weights first, so a reader that finds the graph finds its weights complete. False where the
    folder cannot be written."""
    import openvino as ov

    temporary = target.with_name(f".{target.stem}.tmp-{uuid.uuid4().hex}.xml")
    try:
        ov.save_model(model, str(temporary), compress_to_fp16=False)
        os.replace(temporary.with_suffix(".bin"), target.with_suffix(".bin"))
        os.replace(temporary, target)
    except (OSError, RuntimeError):  # OpenVINO reports a file it cannot write as RuntimeError
        for leftover in (temporary, temporary.with_suffix(".bin")):
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)
        return False
    return True


def release_mapped_pages(path: Path) -> int:
    """Drop this process's resident pages of the mapped file `path` (Linux; elsewhere nothing):
    once a compiled model has run, the CPU plugin computes from its own packed copy of the
    weights, and the mapped fp32 originals would stay resident for nothing (me5-small bf16:
    ~85 MB). A page touched again is read back from the page cache, so nothing can break.
    Returns the bytes released."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    released = 0
    name = str(path.resolve())
    for line in maps.read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == name:
            start, end = (int(address, 16) for address in fields[0].split("-"))
            if libc.madvise(start, end - start, MADV_DONTNEED) == 0:
                released += end - start
    return released


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


def bf16_residual_stream(model: Any) -> int:
    """Let a bf16 compile run the residual stream in bf16 too. The CPU plugin keeps in fp32
    every node it reaches from an output without crossing a matmul (the graph's "tail", kept for
    accuracy); in a post-LN transformer the residual connections reach from the output through
    every layer's sums and layer norms to the embeddings, so the whole stream ran in fp32, with
    a bf16 <-> fp32 reorder around each of its nodes. In bf16 (me5-small, 2 streams): 1,000
    STS-B sentences 7 % faster, passages of 128 tokens 13 %, of 512 tokens 3 %, vectors within
    0.99995 of the fp32 stream's. Nodes of these kinds outside the stream run in bf16 anyway.
    Returns how many nodes were marked."""
    marked = 0
    for node in model.get_ops():
        if node.get_type_name() in RESIDUAL_STREAM_OPS:
            # a bool held by OpenVINO itself: a value set through `get_rt_info()[key]` stays a
            # Python object, and compiling for several streams then aborts the process
            node.set_rt_info(True, BF16_IN_TAIL)
            marked += 1
    return marked


def looks_up_input_ids(gather: Any) -> bool:
    """Whether a Gather's indices are the `input_ids` parameter (through Converts)."""
    node = gather.input_value(1).get_node()
    while node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node.get_type_name() == "Parameter" and "input_ids" in node.output(0).get_names()


def drop_softmax_nan_guard(model: Any) -> int:
    """Remove ``Select(IsNaN(p), 0, p)`` after attention's softmax ``p``, which the ONNX export of
    PyTorch's attention adds for rows whose every key is masked: with a key padding mask that is
    a text with no token at all, whose vector is undefined anyway (its mean pools nothing), and the
    guard keeps the CPU plugin from fusing attention into its one kernel. Any other row is the same
    numbers either way. Returns how many guards were removed."""
    removed = 0
    for select in model.get_ops():
        if select.get_type_name() != "Select":
            continue
        condition, replacement, value = select.input_values()
        is_nan = condition.get_node()
        if (
            is_nan.get_type_name() != "IsNaN"
            or value.get_node().get_type_name() != "Softmax"
            or is_nan.input_value(0) != value
            or replacement.get_node().get_type_name() != "Constant"
            or np.any(replacement.get_node().get_data() != 0)
        ):
            continue
        select.output(0).replace(value)
        removed += 1
    return removed


def attentions(model: Any) -> list[Any]:
    return [op for op in model.get_ops() if op.get_type_name() == "ScaledDotProductAttention"]


def attention_scale_in_queries(model: Any) -> int:
    """Fold each attention's scale (1/√head size) into its query projection's weights and bias
    and give the attention a scale of 1: the CPU plugin otherwise multiplies every score by it,
    inside its fused kernel or as a node of its own. Attentions whose query is not a projection
    of their own (a MatMul by constant weights, a constant bias if any, then reshapes and
    transposes) are left alone. Returns how many were changed."""
    import openvino.opset13 as ops

    folded = 0
    for attention in attentions(model):
        scale = attention.input_value(4).get_node() if attention.get_input_size() > 4 else None
        projection = sole_producer(attention.input_value(0), through=("Transpose", "Reshape"))
        bias_add = projection if projection.get_type_name() == "Add" else None
        matmul = bias_add.input_value(0).get_node() if bias_add else projection
        scaled = [matmul, bias_add] if bias_add else [matmul]  # weights, bias: their input 1
        if (
            scale is None
            or scale.get_type_name() != "Constant"
            or matmul.get_type_name() != "MatMul"
            or any(len(node.output(0).get_target_inputs()) > 1 for node in scaled)
            or any(node.input_value(1).get_node().get_type_name() != "Constant" for node in scaled)
        ):
            continue
        factor = np.float32(scale.get_data())
        for node in scaled:
            constant = node.input_value(1).get_node().get_data()
            node.input(1).replace_source_output(ops.constant(constant * factor).output(0))
        attention.input(4).replace_source_output(ops.constant(np.float32(1)).output(0))
        folded += 1
    return folded


def sole_producer(value: Any, through: tuple[str, ...]) -> Any:
    """The node behind `value`, passing back through nodes of the `through` types that feed
    only the next one."""
    node = value.get_node()
    while node.get_type_name() in through and len(node.output(0).get_target_inputs()) == 1:
        node = node.input_value(0).get_node()
    return node


def additive_key_mask(model: Any) -> bool:
    """Give the attentions one additive mask over keys, [batch, 1, 1, keys] of 0 and -inf made
    once from `attention_mask`, where the traced graph gives them a boolean [batch, 1, queries,
    keys] one: the CPU plugin's kernel then adds one row to every row of scores instead of
    choosing each score from the mask. Replaced only where a run of the traced mask on a probe
    batch shows it is exactly the key padding (a causal mask, for one, is left alone). Returns
    whether it was replaced."""
    import openvino as ov
    import openvino.opset13 as ops

    nodes = attentions(model)
    parameters = {p.get_friendly_name(): p for p in model.get_parameters()}
    if (
        not nodes
        or any(node.get_input_size() < 4 for node in nodes)
        or set(parameters) != {"input_ids", "attention_mask"}
    ):
        return False
    mask = nodes[0].input_value(3)
    sources = {
        (n.input_value(3).get_node().get_name(), n.input_value(3).get_index()) for n in nodes
    }
    if (
        len(sources) > 1
        or mask.get_element_type() != ov.Type.boolean
        or nodes[0].input_value(0).get_element_type() != ov.Type.f32
    ):
        return False
    padding = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=np.int64)
    probe = ov.Core().compile_model(ov.Model([mask], model.get_parameters()), "CPU")
    traced = probe({"input_ids": np.full_like(padding, 5), "attention_mask": padding})[0]
    batch, width = padding.shape
    keys_only = np.broadcast_to(padding[:, None, None, :] != 0, (batch, 1, width, width))
    if traced.shape not in {keys_only.shape, (batch, 1, 1, width)}:
        return False
    if not np.array_equal(np.broadcast_to(traced, keys_only.shape), keys_only):
        return False
    attention_mask = parameters["attention_mask"]
    keep = ops.not_equal(attention_mask, ops.constant(0, attention_mask.get_element_type()))
    keys = ops.unsqueeze(keep, ops.constant(np.array([1, 2], dtype=np.int64)))
    additive = ops.select(keys, np.float32(0), np.float32(-np.inf))
    for attention in nodes:
        attention.input(3).replace_source_output(additive.output(0))
    model.validate_nodes_and_infer_types()
    return True
