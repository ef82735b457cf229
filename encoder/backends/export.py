"""ONNX exports of a model, built once and cached beside it: fp32 by the TorchScript exporter,
int8 by ONNX Runtime's dynamic quantisation (per-channel weights).

Layout: `<cache>/models/<model>.onnx/<key>/<backend>/{model.onnx, meta.json}`. The key hashes
the model's weights fingerprint and the versions of everything that shapes the graph (torch,
transformers, onnx, onnxruntime, this exporter), so a change of any of them builds a new export
and removes the stale one. Each `<backend>` folder is written under a temporary name and renamed
when complete: a killed export leaves only a `.partial` folder, which is never read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from baihua.core.files import PARTIAL_SUFFIX, write_folder_atomic
from baihua.encoder.fingerprint import model_fingerprint

EXPORT_FORMAT = 1  # bump when the graph's inputs, outputs or quantisation change
OPSET = 17
MODEL_FILE = "model.onnx"
META_FILE = "meta.json"
PARTIAL_MAX_AGE_S = 3600.0  # older partial folders are left-overs of killed exports
OUTPUTS = ("last_hidden_state", "first_hidden_state", "pooler_output")
# Names the int8 recipe; a stored int8 export with another is rebuilt. Measured on me5-small
# (STS-B test): quantising every MatMul cost 0.7 Spearman points; keeping the FFN output
# projections of the first half of the layers in float (their inputs carry activation outliers
# that per-tensor dynamic quantisation clips) brought mean cosine to fp32 from 0.9974 to 0.9990.
QUANTIZATION = "dynamic int8 MatMul, per-channel weights; FFN outputs of the first half in float"


def export_key(folder: Path, cache_dir: Path) -> dict[str, Any]:
    """Everything an export depends on; its hash names the export folder."""
    return {
        "model": model_fingerprint(str(folder), cache_dir),
        "format": EXPORT_FORMAT,
        "opset": OPSET,
        "torch": version("torch"),
        "transformers": version("transformers"),
        "onnx": version("onnx"),
        "onnxruntime": version("onnxruntime"),
    }


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def exports_root(cache_dir: Path, model_name: str, folder: Path) -> Path:
    """`<cache>/models/<model>.onnx`: beside a prepared preset's folder; local folders and hub
    snapshots get their folder name plus a hash of their path, so two models never share it."""
    if folder.parent == cache_dir / "models":
        return folder.parent / f"{folder.name}.onnx"
    name = Path(model_name).name if Path(model_name).is_dir() else model_name
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in name.strip("/"))[-48:]
    path_hash = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]
    return cache_dir / "models" / f"{slug}-{path_hash}.onnx"


def read_meta(folder: Path) -> dict[str, Any] | None:
    """The export's metadata when `folder` holds a complete export (its metadata and the graph
    file it names, `model.onnx` unless it says otherwise), else None."""
    try:
        meta: dict[str, Any] = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta if (folder / meta.get("model_file", MODEL_FILE)).is_file() else None


def update_meta(folder: Path, **fields: Any) -> None:
    """Add fields to a complete export's metadata (atomically: write a sibling, then rename)."""
    meta = {**(read_meta(folder) or {}), **fields}
    tmp = folder / f".{META_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, folder / META_FILE)


def build_atomically(target: Path, build: Callable[[Path], dict[str, Any]]) -> Path:
    """Run `build(tmp)` in a temporary sibling folder, write its metadata, then put it in
    place of `target` (an outdated one, or one a concurrent build finished first: the same
    content) with `write_folder_atomic`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_partials(target.parent)

    def write(tmp: Path) -> None:
        meta = build(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))

    write_folder_atomic(target, write)
    return target


def remove_partials(folder: Path) -> None:
    """Delete the left-overs of killed exports (old enough that no live export owns them)."""
    now = time.time()
    for path in folder.glob(f".*{PARTIAL_SUFFIX}"):
        if now - path.stat().st_mtime > PARTIAL_MAX_AGE_S:
            shutil.rmtree(path, ignore_errors=True)


def remove_stale(root: Path, keep: str) -> None:
    """Remove the exports of this model under other keys (older model files or versions)."""
    for path in root.iterdir() if root.is_dir() else ():
        if path.is_dir() and path.name != keep and not path.name.startswith("."):
            shutil.rmtree(path, ignore_errors=True)


class _WithFirstLayer(torch.nn.Module):
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
    wrapper = _WithFirstLayer(model).eval()
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
