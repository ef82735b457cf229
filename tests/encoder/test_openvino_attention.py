"""The attention rewrites of a float OpenVINO graph (`attention_scale_in_queries`,
`additive_key_mask`): on the tiny BERT's graph the same outputs as the traced attention, with
one multiplication fewer per attention in what the CPU plugin runs; attentions they cannot
prove equivalent are left alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from baihua.encoder import Encoder
from baihua.encoder.backends.openvino_backend import BF16_RECIPE, FLOAT_ATTENTION
from baihua.encoder.backends.openvino_export import IR_FILE
from baihua.encoder.backends.openvino_graph import (
    additive_key_mask,
    attention_scale_in_queries,
    attentions,
)
from tests.encoder.test_openvino_backends import runtime_layers

IDS = np.array([[2, 10, 40, 60, 80, 3], [2, 11, 12, 3, 0, 0]], dtype=np.int64)
PADDING = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dtype=np.int64)
# the plugin's plain attention nodes (its fused kernel hides them)
PLAIN_ATTENTION = {"INFERENCE_PRECISION_HINT": "f32", "SNIPPETS_MODE": "DISABLE"}


@pytest.fixture(scope="module")
def float_graph(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("openvino-attention")
    encoder = Encoder(
        str(tiny_bert), device="cpu", backend="openvino", dtype="float32", cache_dir=cache
    )
    assert encoder.variant == FLOAT_ATTENTION
    assert BF16_RECIPE.endswith(FLOAT_ATTENTION)
    return encoder.runner.folder / IR_FILE  # type: ignore[attr-defined,no-any-return]


def compiled(model: Any, config: dict[str, str] | None = None) -> Any:
    import openvino as ov

    settings = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1, **(config or {})}
    return ov.Core().compile_model(model, "CPU", settings)


def hidden_states(model: Any) -> np.ndarray:
    return np.asarray(compiled(model)({"input_ids": IDS, "attention_mask": PADDING})[0])


def read(path: Path) -> Any:
    import openvino as ov

    return ov.Core().read_model(str(path))


def test_the_scale_moves_into_the_query_projection_with_the_same_outputs(
    tiny_bert: Path, float_graph: Path
) -> None:
    original, rewritten = read(float_graph), read(float_graph)
    layers = json.loads((tiny_bert / "config.json").read_text())["num_hidden_layers"]
    assert attention_scale_in_queries(rewritten) == layers
    scales = [float(node.input_value(4).get_node().get_data()) for node in attentions(rewritten)]
    assert scales == [1.0] * layers
    assert attention_scale_in_queries(rewritten) == layers  # folding 1 again changes nothing
    before, after = hidden_states(original), hidden_states(rewritten)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)
    # the plugin runs a Multiply as an "Eltwise" layer: one fewer per attention
    eltwise = [
        sum(kind == "Eltwise" for kind, _ in runtime_layers(compiled(graph, PLAIN_ATTENTION)))
        for graph in (original, rewritten)
    ]
    assert eltwise[1] == eltwise[0] - layers


def test_the_key_padding_mask_is_made_once_and_added_with_the_same_outputs(
    float_graph: Path,
) -> None:
    import openvino as ov

    original, rewritten = read(float_graph), read(float_graph)
    assert additive_key_mask(rewritten)
    masks = {node.input_value(3).get_node().get_friendly_name() for node in attentions(rewritten)}
    assert len(masks) == 1
    mask = attentions(rewritten)[0].input_value(3)
    assert mask.get_element_type() == ov.Type.f32
    assert [str(d) for d in mask.get_partial_shape()] == ["?", "1", "1", "?"]
    np.testing.assert_array_equal(hidden_states(rewritten), hidden_states(original))


def one_attention(causal: bool) -> Any:
    """A graph of one attention over looked-up rows, its boolean [batch, 1, queries, keys] mask
    the key padding, and with `causal` also no key after the query."""
    import openvino as ov
    import openvino.opset13 as ops

    ids = ops.parameter([-1, -1], np.int64, name="input_ids")
    attention_mask = ops.parameter([-1, -1], np.int64, name="attention_mask")
    table = np.random.default_rng(0).standard_normal((128, 8)).astype(np.float32)
    rows = ops.gather(ops.constant(table), ids, np.int64(0))
    heads = ops.transpose(ops.reshape(rows, [0, 0, 2, 4], True), [0, 2, 1, 3])
    keys = ops.unsqueeze(ops.not_equal(attention_mask, np.int64(0)), np.array([1, 2]))
    positions = ops.range(np.int64(0), ops.gather(ops.shape_of(ids), np.int64(1), np.int64(0)),
                          np.int64(1), "i64")  # fmt: skip
    queries, key_positions = (ops.unsqueeze(positions, np.int64(axis)) for axis in (1, 0))
    allowed = (
        ops.greater_equal(queries, key_positions)
        if causal
        else ops.greater_equal(queries, np.int64(0))
    )
    mask = ops.logical_and(keys, allowed)
    out = ops.scaled_dot_product_attention(heads, heads, heads, mask, np.float32(0.5))
    return ov.Model([out], [ids, attention_mask])


def test_a_mask_that_is_not_the_key_padding_is_left_alone() -> None:
    causal = one_attention(causal=True)
    assert not additive_key_mask(causal)
    assert attentions(causal)[0].input_value(3).get_node().get_type_name() == "LogicalAnd"
    bidirectional, original = one_attention(causal=False), one_attention(causal=False)
    assert additive_key_mask(bidirectional)
    np.testing.assert_array_equal(hidden_states(bidirectional), hidden_states(original))
    # its query is looked up, not projected: no weights to take the scale
    assert attention_scale_in_queries(bidirectional) == 0
