"""ONNX exports of a model: fp32 by the TorchScript exporter, int8 by ONNX Runtime's dynamic
quantisation (per-channel weights). Layout and naming are in `export.py`."""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from baihua.encoder.backends.export import MODEL_FILE, OPSET, OUTPUTS, QUANTIZATION, read_meta


class WithFirstLayer(torch.nn.Module):
    """The model with the outputs every pooling needs as plain graph outputs."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model
        self.has_pooler = getattr(model, "pooler", None) is not None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[Any, ...]:
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
        )
        states = (out.last_hidden_state, out.hidden_states[1])
        return (*states, out.pooler_output) if self.has_pooler else states


def export_fp32(model: PreTrainedModel, out: Path) -> dict[str, Any]:
    """Write `out/model.onnx` with dynamic batch and sequence axes; returns its metadata."""
    wrapper = WithFirstLayer(model).eval()
    outputs = list(OUTPUTS if wrapper.has_pooler else OUTPUTS[:2])
    ids = torch.ones((2, 8), dtype=torch.long)
    mask = torch.ones((2, 8), dtype=torch.long)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    axes |= {name: {0: "batch", 1: "sequence"} for name in outputs[:2]}
    if wrapper.has_pooler:
        axes["pooler_output"] = {0: "batch"}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape-dependent Python branches
        # The TorchScript exporter (dynamo=False): the dynamo exporter needs onnxscript and
        # produced no faster graph for BERT here.
        torch.onnx.export(
            wrapper,
            (ids, mask),
            str(out / MODEL_FILE),
            input_names=["input_ids", "attention_mask"],
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return {
        "dtype": "float32",
        "outputs": outputs,
        "dim": model.config.hidden_size,
        "has_pooler": wrapper.has_pooler,
    }


@contextlib.contextmanager
def _root_logging(level: int) -> Iterator[None]:
    root = logging.getLogger()
    previous = root.level
    root.setLevel(max(level, previous))
    try:
        yield
    finally:
        root.setLevel(previous)


def sensitive_matmuls(graph_path: Path) -> list[str]:
    """The FFN output projections (`layer.N/output/dense`, not the attention output) of the
    first half of the layers, by the exporter's module-path node names."""
    import onnx

    graph = onnx.load(str(graph_path), load_external_data=False).graph
    ffn_out = {}
    for node in graph.node:
        match = re.search(r"layer\.(\d+)/output/dense/", node.name)
        if node.op_type == "MatMul" and match:
            ffn_out[node.name] = int(match.group(1))
    n_layers = max(ffn_out.values(), default=-1) + 1
    return [name for name, layer in ffn_out.items() if layer < n_layers // 2]


def quantize_int8(fp32: Path, out: Path) -> dict[str, Any]:
    """Dynamic int8 of `fp32/model.onnx` into `out/model.onnx`: weights per output channel,
    activations quantised per batch at run time; only MatMuls with constant weights, so the
    attention products stay in float, and not the sensitive ones (see QUANTIZATION)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    meta = read_meta(fp32)
    assert meta is not None, f"{fp32} is not a complete export"
    kept = sensitive_matmuls(fp32 / MODEL_FILE)
    with _root_logging(logging.ERROR):  # the quantiser reports every skipped node on root
        quantize_dynamic(
            fp32 / MODEL_FILE,
            out / MODEL_FILE,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=kept,
            extra_options={"MatMulConstBOnly": True},
        )
    inherited = {k: meta[k] for k in ("outputs", "dim", "has_pooler", "key")}
    return {**inherited, "dtype": "int8", "quantization": QUANTIZATION, "kept_in_float": kept}
