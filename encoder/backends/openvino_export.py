"""OpenVINO copies of a model's ONNX export, built once and cached beside it: the fp32 graph as
OpenVINO IR, and its int8 post-training static quantisation by NNCF.

Layout: `<cache>/models/<model>.onnx/<key>/{openvino,openvino-int8}/{model.xml, model.bin,
meta.json}`, next to the ONNX folders of the same key (so a changed model or exporter rebuilds
them too). Their metadata records the openvino and nncf versions and the recipe; a copy built
by other versions or another recipe is rebuilt. Written with `build_atomically`, like the ONNX
exports.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from baihua.core.errors import UsageError
from baihua.encoder.backends.export import MODEL_FILE, read_meta

IR_FILE = "model.xml"
# Names the openvino-int8 recipe; a stored copy with another is rebuilt. NNCF's transformer
# scheme (MIXED preset, SmoothQuant) with every FFN output projection kept in float: measured on
# me5-small against fp32 (1,000 STS-B test sentences, last-avg), quantising them too gave min /
# mean cosine 0.9767 / 0.9929; keeping the first half in float 0.9816 / 0.9954; all twelve
# 0.9941 / 0.9989 at the same speed (their inputs carry the activation outliers).
OV_QUANTIZATION = "nncf static int8, transformer scheme, MIXED, FFN outputs in float"
FFN_OUTPUTS = r".*layer\.\d+/output/dense/MatMul.*"  # the exporter's module-path node names


def openvino_versions(int8: bool) -> dict[str, str]:
    """The library versions an OpenVINO copy depends on (nncf only for the int8 one)."""
    versions = {"openvino": version("openvino")}
    if int8:
        try:
            versions["nncf"] = version("nncf")
        except PackageNotFoundError:
            raise UsageError(
                "backend openvino-int8 needs nncf: pip install 'nncf==3.4.0' "
                "(or use backend openvino)"
            ) from None
    return versions


def is_current(folder: Path, int8: bool) -> bool:
    """A complete copy built by the installed versions (and, for int8, this recipe)."""
    meta = read_meta(folder)
    if meta is None or meta.get("versions") != openvino_versions(int8):
        return False
    return not int8 or meta.get("quantization") == OV_QUANTIZATION


def convert_fp32(onnx_fp32: Path, out: Path) -> dict[str, Any]:
    """`onnx_fp32/model.onnx` as OpenVINO IR in `out`, weights kept in fp32 (the inference
    precision is chosen when it is compiled)."""
    import openvino as ov

    meta = read_meta(onnx_fp32)
    assert meta is not None, f"{onnx_fp32} is not a complete export"
    model = ov.Core().read_model(str(onnx_fp32 / MODEL_FILE))
    ov.save_model(model, str(out / IR_FILE), compress_to_fp16=False)
    inherited = {k: meta[k] for k in ("outputs", "dim", "has_pooler", "key")}
    return {**inherited, "dtype": "float32", "model_file": IR_FILE,
            "versions": openvino_versions(int8=False)}  # fmt: skip


def quantize_static_int8(
    onnx_fp32: Path, out: Path, batches: Sequence[tuple[np.ndarray, np.ndarray]]
) -> dict[str, Any]:
    """NNCF post-training static int8 of `onnx_fp32/model.onnx` into IR in `out`: activation
    ranges from running the calibration `batches` (fixed texts, never evaluation data)."""
    import openvino as ov

    versions = openvino_versions(int8=True)
    import nncf

    meta = read_meta(onnx_fp32)
    assert meta is not None, f"{onnx_fp32} is not a complete export"
    model = ov.Core().read_model(str(onnx_fp32 / MODEL_FILE))
    items = [{"input_ids": ids, "attention_mask": mask} for ids, mask in batches]
    nncf_logger = logging.getLogger("nncf")  # it logs to stdout, which may carry data
    level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # and its progress bars
            quantized = nncf.quantize(
                model,
                nncf.Dataset(items),
                model_type=nncf.ModelType.TRANSFORMER,
                preset=nncf.QuantizationPreset.MIXED,
                subset_size=len(items),
                ignored_scope=nncf.IgnoredScope(patterns=[FFN_OUTPUTS], validate=False),
            )
    finally:
        nncf_logger.setLevel(level)
    ov.save_model(quantized, str(out / IR_FILE), compress_to_fp16=False)
    inherited = {k: meta[k] for k in ("outputs", "dim", "has_pooler", "key")}
    return {**inherited, "dtype": "int8", "model_file": IR_FILE, "versions": versions,
            "quantization": OV_QUANTIZATION}  # fmt: skip
