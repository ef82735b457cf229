"""OpenVINO copies of a model, built once and cached beside its ONNX exports: the fp32 graph as
OpenVINO IR, and the ONNX graph's int8 post-training static quantisation by NNCF.

The fp32 copy is converted from the PyTorch model by OpenVINO's own PyTorch frontend, not from
the ONNX export: it keeps attention as one ScaledDotProductAttention node, which the CPU plugin
runs as a fused kernel, where the ONNX graph spells attention out in a dozen nodes. me5-small in
bf16 against torch bf16 in one run of bench/encode_throughput.py: 1.14x / 1.03x / 1.08x at 128 /
256 / 512 tokens, where the copy read from ONNX gave 1.24x / 0.87x / 0.68x.

Layout: `<cache>/models/<model>.onnx/<key>/{openvino,openvino-int8}/{model.xml, model.bin,
meta.json}`, next to the ONNX folders of the same key (so a changed model or library rebuilds
them too). Their metadata records the openvino and nncf versions and the recipe; a copy built
by other versions or another recipe is rebuilt. Written with `build_atomically`, like the ONNX
exports.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from baihua.core.errors import UsageError
from baihua.encoder.backends.export import MODEL_FILE, OUTPUTS, read_meta

if TYPE_CHECKING:
    from transformers import PreTrainedModel

IR_FILE = "model.xml"
# Names how a copy was converted; a stored copy converted otherwise is rebuilt.
OV_CONVERSION = "PyTorch frontend, SDPA attention"
# Names the openvino-int8 recipe; a stored copy with another is rebuilt. NNCF's transformer
# scheme (MIXED preset, SmoothQuant) with every FFN output projection kept in float: measured on
# me5-small against fp32 (1,000 STS-B test sentences, last-avg), quantising them too gave min /
# mean cosine 0.9767 / 0.9929; keeping the first half in float 0.9816 / 0.9954; all twelve
# 0.9941 / 0.9989 at the same speed (their inputs carry the activation outliers). And attention's
# product of probabilities and values kept in float (at 512 tokens a probability is ~1/512 of its
# row, likely too fine for one int8 scale per tensor): min / mean cosine on 32 passages of 512
# tokens 0.9889 / 0.9904 → 0.9947 / 0.9959, at 256 tokens 0.9938 → 0.9950, at the same speed
# (keeping the scores' product QKᵀ in float too gained no agreement). Both of attention's
# products are in float all the same: with no int8 input, attention is one float subgraph the CPU
# plugin fuses into its attention kernel (see `drop_softmax_nan_guard`), where int8 queries and
# keys went through its reference transpose. bench/encode_throughput.py on a Zen 5 machine, int8
# against bf16 (unchanged) in each run, before → after: passages of 512 tokens 0.87 → 1.12 one
# request at a time, sentences on two streams 1.16 → 1.27.
OV_QUANTIZATION = "nncf static int8, transformer scheme, MIXED, FFN outputs and attention in float"
# the ONNX exporter's module-path names: FFN output projections, attention's two products
FFN_OUTPUTS = r".*layer\.{layers}/output/dense/MatMul.*"
ATTENTION_MATMULS = r".*attention/self/MatMul(_1)?"


@dataclass(frozen=True)
class Int8Recipe:
    """What a model's preset may change in the int8 recipe, measured for that model: the layers
    whose FFN output projection stays in float (None: every layer's), and SmoothQuant's α for
    matmuls (None: NNCF's default for transformers, 0.95). Kept in float, the FFN output
    projections are a third of int8's time; quantising eleven of them made me5-small 1.2–1.4x
    faster (its preset's note)."""

    float_ffn_layers: tuple[int, ...] | None = None
    smooth_quant_alpha: float | None = None

    @property
    def name(self) -> str:
        """The recipe's name in a copy's metadata and the backend's variant."""
        if self == GENERIC_INT8:
            return OV_QUANTIZATION
        alpha = (
            "" if self.smooth_quant_alpha is None else f", SmoothQuant α {self.smooth_quant_alpha}"
        )
        layers = self.float_ffn_layers
        ffn = "FFN outputs" if layers is None else f"FFN outputs of layers {list(layers)}"
        return f"nncf static int8, transformer scheme, MIXED{alpha}, {ffn} and attention in float"

    @property
    def float_matmuls(self) -> list[str]:
        """NNCF ignored-scope patterns: the matmuls left in float."""
        layers = self.float_ffn_layers
        if layers == ():
            return [ATTENTION_MATMULS]
        which = r"\d+" if layers is None else "(" + "|".join(map(str, layers)) + ")"
        return [FFN_OUTPUTS.format(layers=which), ATTENTION_MATMULS]


GENERIC_INT8 = Int8Recipe()  # a model's preset says nothing: every FFN output in float


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


def is_current(folder: Path, int8: Int8Recipe | None) -> bool:
    """A complete copy built by the installed versions (and, for int8, by `int8`'s recipe)."""
    meta = read_meta(folder)
    if meta is None or meta.get("versions") != openvino_versions(int8 is not None):
        return False
    if int8 is not None:
        return meta.get("quantization") == int8.name
    return meta.get("conversion") == OV_CONVERSION


def torch_to_openvino(model: PreTrainedModel) -> tuple[Any, dict[str, Any]]:
    """The model as an OpenVINO graph with dynamic batch and sequence axes and the outputs every
    pooling needs, named as in the ONNX export; and the metadata they share."""
    import openvino as ov
    import torch

    from baihua.encoder.backends.onnx_export import WithFirstLayer  # needs torch

    wrapper = WithFirstLayer(model).eval()
    names = list(OUTPUTS if wrapper.has_pooler else OUTPUTS[:2])
    ids = torch.ones((2, 8), dtype=torch.long)
    mask = torch.ones((2, 8), dtype=torch.long)
    mask[1, 4:] = 0  # padding in the example, so no mask-free shortcut is traced
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape-dependent Python branches
        graph = ov.convert_model(wrapper, example_input={"input_ids": ids, "attention_mask": mask})
    for output, name in zip(graph.outputs, names, strict=True):
        output.get_tensor().set_names({name})
    meta = {"outputs": names, "dim": model.config.hidden_size, "has_pooler": wrapper.has_pooler,
            "model_file": IR_FILE, "conversion": OV_CONVERSION}  # fmt: skip
    return graph, meta


def convert_fp32(model: PreTrainedModel, out: Path) -> dict[str, Any]:
    """The model as OpenVINO IR in `out`, weights kept in fp32 (the inference precision is
    chosen when it is compiled)."""
    import openvino as ov

    graph, meta = torch_to_openvino(model)
    ov.save_model(graph, str(out / IR_FILE), compress_to_fp16=False)
    return {**meta, "dtype": "float32", "versions": openvino_versions(int8=False)}


def quantize_static_int8(
    onnx_fp32: Path,
    out: Path,
    batches: Sequence[tuple[np.ndarray, np.ndarray]],
    recipe: Int8Recipe = GENERIC_INT8,
) -> dict[str, Any]:
    """NNCF post-training static int8 of `onnx_fp32/model.onnx` into IR in `out`: activation
    ranges from running the calibration `batches` (fixed texts, never evaluation data).

    From the ONNX graph, not the PyTorch frontend's: the same recipe on the frontend's graph
    (attention fused, so left in float) kept min cosine to fp32 (0.99442 on STS-B sentences,
    0.99404 at 512 tokens) and sped long texts up 1.5x, but failed the quality gate on PAWSX
    (Spearman 9.70 against fp32's 11.13; from ONNX 10.69), and neither leaving SmoothQuant or
    bias correction out nor keeping more layers in float brought it within 0.5."""
    import openvino as ov

    versions = openvino_versions(int8=True)
    import nncf

    meta = read_meta(onnx_fp32)
    assert meta is not None, f"{onnx_fp32} is not a complete export"
    model = ov.Core().read_model(str(onnx_fp32 / MODEL_FILE))
    items = [{"input_ids": ids, "attention_mask": mask} for ids, mask in batches]
    advanced = None
    if recipe.smooth_quant_alpha is not None:
        from nncf.quantization.advanced_parameters import (
            AdvancedQuantizationParameters,
            AdvancedSmoothQuantParameters,
        )

        alphas = AdvancedSmoothQuantParameters(matmul=recipe.smooth_quant_alpha)
        advanced = AdvancedQuantizationParameters(smooth_quant_alphas=alphas)
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
                ignored_scope=nncf.IgnoredScope(patterns=recipe.float_matmuls, validate=False),
                advanced_parameters=advanced,
            )
    finally:
        nncf_logger.setLevel(level)
    ov.save_model(quantized, str(out / IR_FILE), compress_to_fp16=False)
    inherited = {k: meta[k] for k in ("outputs", "dim", "has_pooler", "key")}
    return {**inherited, "dtype": "int8", "model_file": IR_FILE, "versions": versions,
            "quantization": recipe.name}  # fmt: skip
