"""The OpenVINO backends against torch fp32 on the tiny random BERT: fp32 to a tight tolerance,
bf16 and NNCF int8 within cosine bounds, on every pooling; their copies cached, atomic and
rebuilt when the openvino or nncf version changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import PackageNotFoundError
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from baihua.core.errors import UsageError
from baihua.encoder import POOLINGS, Encoder, ModelSpec
from baihua.encoder.backends.calibration import MIN_COSINE
from baihua.encoder.backends.export import MODEL_FILE, PARTIAL_SUFFIX
from baihua.encoder.backends.openvino_backend import (
    BF16_RECIPE,
    FLOAT_ATTENTION,
    SHORT_TEXT_TOKENS,
    cpu_has_bf16,
    default_precision,
)
from baihua.encoder.backends.openvino_export import IR_FILE, OV_QUANTIZATION, Int8Recipe
from baihua.encoder.backends.openvino_graph import (
    INT8_VOCABULARY_IR,
    bf16_residual_stream,
    drop_softmax_nan_guard,
    int8_vocabulary_table,
)
from tests.encoder.test_backends import ME5_TEXTS, TEXTS, cosines
from tests.serve_process import read_only


def mapped_mb(graph: Path) -> float:
    """Resident MB of this process's mappings of `graph`'s weights file."""
    name, kb, current = str(graph.with_suffix(".bin").resolve()), 0, ""
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):
            current = fields[5] if len(fields) == 6 else ""
        elif fields[0] == "Rss:" and current == name:
            kb += int(fields[1])
    return kb / 1024


def runtime_layers(compiled: Any) -> list[tuple[str, str]]:
    """(kind, precision) of each layer a compiled model runs."""
    infos = [op.get_rt_info() for op in compiled.get_runtime_model().get_ops()]
    return [
        (str(info["layerType"].astype(str)), str(info["runtimePrecision"].astype(str)))
        for info in infos
    ]


def layer_types(compiled: Any) -> set[str]:
    """The kinds of layer a compiled model runs."""
    return {kind for kind, _ in runtime_layers(compiled)}


def runtime_precisions(compiled: Any, layer_type: str) -> set[str]:
    """The precisions a compiled model runs its layers of `layer_type` in."""
    return {precision for kind, precision in runtime_layers(compiled) if kind == layer_type}


def copies(cache: Path) -> list[Path]:
    return sorted(cache.glob("models/*.onnx/*/openvino*"))


def mtimes(cache: Path) -> dict[Path, int]:
    files = [
        *cache.glob(f"models/*.onnx/*/*/{IR_FILE}"),
        *cache.glob(f"models/*.onnx/*/*/{MODEL_FILE}"),
    ]
    return {path: path.stat().st_mtime_ns for path in files}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("openvino-cache")


@pytest.fixture(scope="module")
def reference(tiny_bert: Path) -> Encoder:
    return Encoder(str(tiny_bert), device="cpu", backend="torch", dtype="float32")


@pytest.mark.parametrize("pooling", POOLINGS)
def test_openvino_fp32_matches_torch_fp32_on_every_pooling(
    tiny_bert: Path, cache: Path, reference: Encoder, pooling: str
) -> None:
    ov = Encoder(str(tiny_bert), device="cpu", backend="openvino", dtype="float32", cache_dir=cache)
    assert (ov.backend, ov.dtype) == ("openvino", "float32")
    np.testing.assert_allclose(
        ov.encode(TEXTS, pooling=pooling), reference.encode(TEXTS, pooling=pooling), atol=1e-5
    )


@pytest.mark.parametrize("pooling", POOLINGS)
def test_openvino_default_precision_is_reported_and_stays_close(
    tiny_bert: Path, cache: Path, reference: Encoder, pooling: str
) -> None:
    ov = Encoder(str(tiny_bert), device="cpu", backend="openvino", cache_dir=cache)
    assert ov.dtype == ("bfloat16" if cpu_has_bf16() else "float32")
    ours, theirs = ov.encode(TEXTS, pooling=pooling), reference.encode(TEXTS, pooling=pooling)
    assert cosines(ours, theirs).min() >= 0.999
    if ov.dtype == "bfloat16":
        assert not np.allclose(ours, theirs, atol=1e-6)  # it really ran in bf16


@pytest.mark.parametrize("pooling", POOLINGS)
def test_openvino_int8_stays_within_the_cosine_bound_on_every_pooling(
    tiny_bert: Path, cache: Path, reference: Encoder, pooling: str
) -> None:
    int8 = Encoder(str(tiny_bert), device="cpu", backend="openvino-int8", cache_dir=cache)
    assert (int8.backend, int8.dtype) == ("openvino-int8", "int8")
    assert int8.variant == f"{OV_QUANTIZATION}; float parts in {default_precision()}"
    ours, theirs = int8.encode(TEXTS, pooling=pooling), reference.encode(TEXTS, pooling=pooling)
    assert cosines(ours, theirs).min() >= MIN_COSINE
    assert not np.allclose(ours, theirs, atol=1e-4)


def test_bf16_looks_up_the_vocabulary_in_int8_and_stays_close(tiny_bert: Path, cache: Path) -> None:
    """The float copy run in bf16 keeps the vocabulary table (and only it) in int8, one scale a
    row: on fp32 the rewritten graph stays within 0.9999 of the original, and is really changed."""
    import openvino as ov

    if not cpu_has_bf16():
        pytest.skip("the table is rewritten for bf16 runs only; this CPU has no bf16")
    encoder = Encoder(str(tiny_bert), device="cpu", backend="openvino", cache_dir=cache)
    assert encoder.variant == BF16_RECIPE
    fp32 = Encoder(
        str(tiny_bert), device="cpu", backend="openvino", dtype="float32", cache_dir=cache
    )
    assert fp32.variant == FLOAT_ATTENTION
    path = str(encoder.runner.folder / IR_FILE)  # type: ignore[attr-defined]
    original, rewritten = ov.Core().read_model(path), ov.Core().read_model(path)
    assert int8_vocabulary_table(rewritten) == 1
    int8_tables = [
        list(op.get_output_shape(0))
        for op in rewritten.get_ops()
        if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8
    ]
    config = json.loads((tiny_bert / "config.json").read_text())
    assert int8_tables == [[config["vocab_size"], config["hidden_size"]]]
    ids = np.array([[2, 10, 40, 60, 80, 3]], dtype=np.int64)
    inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    f32 = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}
    before, after = (
        ov.Core().compile_model(graph, "CPU", f32)(inputs)["last_hidden_state"][0]
        for graph in (original, rewritten)
    )
    assert cosines(after, before).min() >= 0.9999
    assert not np.allclose(after, before, atol=1e-6)


def test_bf16_runs_the_residual_stream_and_layer_norms_in_bf16(
    tiny_bert: Path, cache: Path
) -> None:
    """Both bf16 compiles run every layer norm in bf16, on two streams too (compiled in the
    plugin's own threads); the same graph unmarked keeps them in fp32 (the plugin's "graph
    tail")."""
    import openvino as ov

    if not cpu_has_bf16():
        pytest.skip("bf16 runs only; this CPU has no bf16")
    encoder = Encoder(str(tiny_bert), device="cpu", backend="openvino", cache_dir=cache, streams=2)
    runner: Any = encoder.runner
    for compiled in (runner.compiled, runner.compiled_short):
        assert runtime_precisions(compiled, "MVN") == {"bf16"}
    unmarked = ov.Core().read_model(str(runner.folder / IR_FILE))
    config = {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": 1}
    assert runtime_precisions(ov.Core().compile_model(unmarked, "CPU", config), "MVN") == {"f32"}
    assert bf16_residual_stream(unmarked) > 0
    assert runtime_precisions(ov.Core().compile_model(unmarked, "CPU", config), "MVN") == {"bf16"}


def test_bf16_maps_its_int8_vocabulary_copy_written_once_or_rewrites_where_it_cannot_write(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """A bf16 run writes the graph with its int8 table beside the float copy on first use and
    maps it after; where the folder is read-only it rewrites in memory: the same vectors."""
    if not cpu_has_bf16():
        pytest.skip("the table is rewritten for bf16 runs only; this CPU has no bf16")
    cache = tmp_path / "cache"
    first = Encoder(str(tiny_bert), device="cpu", backend="openvino", cache_dir=cache)
    copy = first.runner.folder / INT8_VOCABULARY_IR  # type: ignore[attr-defined]
    written = copy.stat().st_mtime_ns
    vectors = first.encode(TEXTS)
    again = Encoder(str(tiny_bert), device="cpu", backend="openvino", cache_dir=cache)
    assert copy.stat().st_mtime_ns == written
    np.testing.assert_array_equal(again.encode(TEXTS), vectors)
    copy.unlink()
    copy.with_suffix(".bin").unlink()
    with read_only(copy.parent):
        in_memory = Encoder(str(tiny_bert), device="cpu", backend="openvino", cache_dir=cache)
        np.testing.assert_array_equal(in_memory.encode(TEXTS), vectors)
    assert not copy.exists()
    assert sorted(path.name for path in copy.parent.iterdir()) == [
        "meta.json",
        "model.bin",
        "model.xml",
    ]


def test_short_and_long_texts_run_on_their_own_compile_whatever_their_batch_mates(
    tiny_bert: Path, cache: Path
) -> None:
    """Texts up to SHORT_TEXT_TOKENS run on the compile without fused attention, longer ones on
    the other; a batch holding both gives each text the vector it gets alone, and each compile
    is within float rounding of the other."""
    encoder = Encoder(str(tiny_bert), device="cpu", backend="openvino", cache_dir=cache)
    runner: Any = encoder.runner
    assert "Softmax" not in layer_types(runner.compiled)  # fused into the attention kernel
    assert "Softmax" in layer_types(runner.compiled_short)
    long = " ".join(TEXTS * 8)
    tokens = encoder.tokenizer.encode([long, TEXTS[0]], encoder.max_length)[1]
    assert tokens[0] > SHORT_TEXT_TOKENS >= tokens[1]
    together = encoder.encode([TEXTS[0], long, TEXTS[1]])
    alone = np.vstack([encoder.encode([text]) for text in (TEXTS[0], long, TEXTS[1])])
    np.testing.assert_array_equal(together, alone)
    # the int8 graph's attention, in float and without the softmax's NaN guard, fuses too
    int8: Any = Encoder(str(tiny_bert), device="cpu", backend="openvino-int8", cache_dir=cache)
    assert "Softmax" not in layer_types(int8.runner.compiled)
    assert "Softmax" in layer_types(int8.runner.compiled_short)
    together = int8.encode([TEXTS[0], long, TEXTS[1]])
    alone = np.vstack([int8.encode([text]) for text in (TEXTS[0], long, TEXTS[1])])
    np.testing.assert_array_equal(together, alone)


def test_int8_copy_is_quantised_and_checked_against_fp32(tiny_bert: Path, cache: Path) -> None:
    import openvino as ov

    encoder = Encoder(str(tiny_bert), device="cpu", backend="openvino-int8", cache_dir=cache)
    folder = encoder.runner.folder  # type: ignore[attr-defined]
    ops = {op.get_type_name() for op in ov.Core().read_model(str(folder / IR_FILE)).get_ops()}
    assert "FakeQuantize" in ops
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["dtype"] == "int8" and set(meta["versions"]) == {"openvino", "nncf"}
    assert MIN_COSINE <= meta["calibration"]["min_cosine"] <= meta["calibration"]["mean_cosine"]


def test_int8_keeps_ffn_outputs_and_attention_in_float(tiny_bert: Path, cache: Path) -> None:
    """The products int8 loses most on (outliers; probabilities of long texts) and attention's
    scores (so attention fuses) get no quantised input; the other projections do."""
    encoder = Encoder(str(tiny_bert), device="cpu", backend="openvino-int8", cache_dir=cache)
    quantised = quantised_matmuls(encoder.runner.folder)  # type: ignore[attr-defined]
    layers = {name.split("/")[3] for name in quantised if "/layer." in name}
    assert len(layers) == 2  # the tiny BERT's
    for layer in layers:
        prefix = f"/model/encoder/{layer}"
        assert not quantised[f"{prefix}/output/dense/MatMul"]
        assert not quantised[f"{prefix}/attention/self/MatMul_1"]
        assert not quantised[f"{prefix}/attention/self/MatMul"]
        assert quantised[f"{prefix}/attention/self/query/MatMul"]
        assert quantised[f"{prefix}/intermediate/dense/MatMul"]


def quantised_matmuls(folder: Path) -> dict[str, bool]:
    """Each MatMul of the int8 copy in `folder`: whether an input comes from a FakeQuantize."""
    import openvino as ov

    return {
        op.get_friendly_name(): any(
            i.get_source_output().get_node().get_type_name() == "FakeQuantize" for i in op.inputs()
        )
        for op in ov.Core().read_model(str(folder / IR_FILE)).get_ops()
        if op.get_type_name() == "MatMul"
    }


def test_a_presets_int8_recipe_quantises_the_ffn_outputs_it_does_not_name(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """A preset may keep only some layers' FFN outputs in float and set SmoothQuant's α: its
    copy says so in the variant, and a copy built by the other recipe is rebuilt, not reused."""
    generic = Encoder(str(tiny_bert), device="cpu", backend="openvino-int8", cache_dir=tmp_path)
    generic_bytes = (generic.runner.folder / "model.bin").read_bytes()  # type: ignore[attr-defined]
    recipe = Int8Recipe(float_ffn_layers=(1,), smooth_quant_alpha=0.6)
    spec = ModelSpec(
        name=str(tiny_bert),
        source=str(tiny_bert),
        int8_float_ffn_layers=recipe.float_ffn_layers,
        int8_smooth_quant_alpha=recipe.smooth_quant_alpha,
    )
    tuned = Encoder(spec, device="cpu", backend="openvino-int8", cache_dir=tmp_path)
    folder = tuned.runner.folder  # type: ignore[attr-defined]
    assert tuned.variant.startswith(f"{recipe.name};") and "layers [1]" in recipe.name
    quantised = quantised_matmuls(folder)
    assert quantised["/model/encoder/layer.0/output/dense/MatMul"]
    assert not quantised["/model/encoder/layer.1/output/dense/MatMul"]
    assert not quantised["/model/encoder/layer.0/attention/self/MatMul"]
    assert (folder / "model.bin").read_bytes() != generic_bytes
    assert json.loads((folder / "meta.json").read_text())["calibration"]["min_cosine"] >= MIN_COSINE
    # α alone changes the copy (SmoothQuant's scales are folded into it)
    alpha_only = Int8Recipe(smooth_quant_alpha=0.6)
    spec = ModelSpec(name=str(tiny_bert), source=str(tiny_bert), int8_smooth_quant_alpha=0.6)
    Encoder(spec, device="cpu", backend="openvino-int8", cache_dir=tmp_path)
    assert json.loads((folder / "meta.json").read_text())["quantization"] == alpha_only.name
    assert (folder / "model.bin").read_bytes() != generic_bytes
    again = Encoder(str(tiny_bert), device="cpu", backend="openvino-int8", cache_dir=tmp_path)
    assert again.variant.startswith(f"{OV_QUANTIZATION};")


def test_embedding_rows_are_dequantized_after_the_lookup_with_the_same_results(
    tiny_bert: Path, cache: Path
) -> None:
    """The int8 copy's embedding tables stay int8 in the compiled model (no float copy of the
    whole table), and its outputs are bit-identical to the graph as NNCF wrote it."""
    import openvino as ov

    from baihua.encoder.backends.openvino_backend import gather_before_dequantizing

    encoder = Encoder(str(tiny_bert), device="cpu", backend="openvino-int8", cache_dir=cache)
    path = str(encoder.runner.folder / IR_FILE)  # type: ignore[attr-defined]
    core = ov.Core()
    as_written, rewritten = core.read_model(path), core.read_model(path)
    assert gather_before_dequantizing(rewritten) >= 1
    assert gather_before_dequantizing(rewritten) == 0  # nothing left to rewrite
    tables = [
        op.input_value(0)
        for op in rewritten.get_ops()
        if op.get_type_name() == "Gather"
        and op.input_value(0).get_node().get_type_name() == "Constant"
    ]
    assert ov.Type.i8 in {table.get_element_type() for table in tables}
    ids = np.random.default_rng(0).integers(1, 100, (4, 16))
    inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}
    before = core.compile_model(as_written, "CPU", config)(inputs)
    after = core.compile_model(rewritten, "CPU", config)(inputs)
    np.testing.assert_array_equal(before["last_hidden_state"], after["last_hidden_state"])


def test_the_softmax_nan_guard_is_dropped_with_the_same_results_on_padded_texts(
    tiny_bert: Path, cache: Path
) -> None:
    """Each attention of the int8 copy (from the ONNX export) loses its Select(IsNaN(p), 0, p);
    on texts with padding the outputs are bit-identical to the guarded graph's."""
    import openvino as ov

    encoder = Encoder(str(tiny_bert), device="cpu", backend="openvino-int8", cache_dir=cache)
    path = str(encoder.runner.folder / IR_FILE)  # type: ignore[attr-defined]
    core = ov.Core()
    guarded, rewritten = core.read_model(path), core.read_model(path)
    assert drop_softmax_nan_guard(rewritten) == 2  # one a layer of the tiny BERT
    assert drop_softmax_nan_guard(rewritten) == 0
    assert "IsNaN" not in {op.get_type_name() for op in rewritten.get_ops()}
    ids = np.random.default_rng(0).integers(1, 100, (4, 16))
    mask = np.ones_like(ids)
    mask[1, 3:], mask[2, 9:] = 0, 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    config = {"INFERENCE_PRECISION_HINT": "f32", "SNIPPETS_MODE": "DISABLE"}
    before = core.compile_model(guarded, "CPU", config)(inputs)
    after = core.compile_model(rewritten, "CPU", config)(inputs)
    np.testing.assert_array_equal(before["last_hidden_state"], after["last_hidden_state"])


def test_copies_are_built_once_and_reused(tiny_bert: Path, tmp_path: Path) -> None:
    Encoder(str(tiny_bert), device="cpu", backend="openvino", cache_dir=tmp_path)
    # converted from the PyTorch model: no ONNX export is built for it (int8 quantises that)
    assert [p.parent.name for p in mtimes(tmp_path)] == ["openvino"]
    Encoder(str(tiny_bert), device="cpu", backend="openvino-int8", cache_dir=tmp_path)
    built = mtimes(tmp_path)
    assert sorted(p.parent.name for p in built) == ["onnx", "openvino", "openvino-int8"]
    for backend in ("openvino-int8", "openvino", "onnx"):
        Encoder(str(tiny_bert), device="cpu", backend=backend, cache_dir=tmp_path)
    assert mtimes(tmp_path) == built


def test_a_new_nncf_version_rebuilds_only_the_int8_copy(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from baihua.encoder.backends import openvino_export

    for backend in ("openvino", "openvino-int8"):
        Encoder(str(tiny_bert), device="cpu", backend=backend, cache_dir=tmp_path)
    before = mtimes(tmp_path)
    real_version = openvino_export.version
    monkeypatch.setattr(
        openvino_export, "version", lambda name: "99.0" if name == "nncf" else real_version(name)
    )
    for backend in ("openvino", "openvino-int8"):
        Encoder(str(tiny_bert), device="cpu", backend=backend, cache_dir=tmp_path)
    after = mtimes(tmp_path)
    changed = sorted(p.parent.name for p in after if after[p] != before.get(p))
    assert changed == ["openvino-int8"]
    (int8,) = tmp_path.glob("models/*.onnx/*/openvino-int8")
    assert json.loads((int8 / "meta.json").read_text())["versions"]["nncf"] == "99.0"


def test_without_nncf_int8_is_a_clear_error(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from baihua.encoder.backends import openvino_export

    def version(name: str) -> str:
        if name == "nncf":
            raise PackageNotFoundError(name)
        return "2026.4.1"

    monkeypatch.setattr(openvino_export, "version", version)
    with pytest.raises(ValueError, match="backend openvino-int8 needs nncf"):
        Encoder(str(tiny_bert), device="cpu", backend="openvino-int8", cache_dir=tmp_path)


KILLED_QUANTISATION = """
import os, signal, sys
from baihua.encoder import Encoder
import baihua.encoder.backends.prepare as prepare

def killed_while_writing(fp32, out, batches, recipe):
    (out / "model.xml").write_bytes(b"half an IR file")
    os.kill(os.getpid(), signal.SIGKILL)

prepare.quantize_static_int8 = killed_while_writing
Encoder(sys.argv[1], device="cpu", backend="openvino-int8", cache_dir=sys.argv[2])
"""


def test_a_killed_quantisation_leaves_nothing_that_is_used_later(
    tiny_bert: Path, tmp_path: Path, reference: Encoder
) -> None:
    script = tmp_path / "kill.py"
    script.write_text(textwrap.dedent(KILLED_QUANTISATION))
    done = subprocess.run(
        [sys.executable, str(script), str(tiny_bert), str(tmp_path / "c")],
        env=dict(os.environ),
        timeout=300,
    )
    assert done.returncode == -9
    assert copies(tmp_path / "c") == []
    (partial,) = (tmp_path / "c").glob(f"models/*.onnx/*/.openvino-int8.*{PARTIAL_SUFFIX}")
    assert (partial / IR_FILE).read_bytes() == b"half an IR file"
    int8 = Encoder(str(tiny_bert), device="cpu", backend="openvino-int8", cache_dir=tmp_path / "c")
    assert cosines(int8.encode(TEXTS), reference.encode(TEXTS)).min() >= MIN_COSINE


@pytest.mark.parametrize(
    ("backend", "dtype", "message"),
    [
        ("openvino-int8", "bfloat16", "backend openvino-int8 runs dtype int8"),
        ("openvino", "int8", "backend openvino runs dtype float32 or bfloat16"),
    ],
)
def test_impossible_openvino_dtypes_are_refused(
    tiny_bert: Path, backend: str, dtype: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Encoder(str(tiny_bert), device="cpu", backend=backend, dtype=dtype)  # type: ignore[arg-type]


@pytest.mark.slow
def test_openvino_backends_on_the_real_default_model() -> None:
    """me5-small: OpenVINO fp32 equals torch fp32; its bf16 and int8 keep the cosine bound."""
    reference = Encoder("me5-small", device="cpu", backend="torch").encode(ME5_TEXTS)
    fp32 = Encoder("me5-small", device="cpu", backend="openvino", dtype="float32")
    assert cosines(fp32.encode(ME5_TEXTS), reference).min() >= 0.99999
    for backend in ("openvino", "openvino-int8"):
        encoder = Encoder("me5-small", device="cpu", backend=backend)  # type: ignore[arg-type]
        assert cosines(encoder.encode(ME5_TEXTS), reference).min() >= MIN_COSINE
    # int8 on its preset's recipe: every FFN output in int8 but layer 9's
    quantised = quantised_matmuls(encoder.runner.folder)  # type: ignore[attr-defined]
    ffn = [quantised[f"/model/encoder/layer.{i}/output/dense/MatMul"] for i in range(12)]
    assert ffn == [i != 9 for i in range(12)]
    if cpu_has_bf16():  # bf16 with its int8 vocabulary table: as close as bf16 alone
        bf16 = Encoder("me5-small", device="cpu", backend="openvino", dtype="bfloat16")
        assert cosines(bf16.encode(ME5_TEXTS), reference).min() >= 0.9999
        # a passage over SHORT_TEXT_TOKENS beside short texts: each text keeps its own vector
        passage = "。".join(ME5_TEXTS * 4)
        mixed = bf16.encode([*ME5_TEXTS, passage])
        np.testing.assert_array_equal(mixed[:-1], bf16.encode(ME5_TEXTS))
        np.testing.assert_array_equal(mixed[-1:], bf16.encode([passage]))
        # the mapped copy's fp32 weights leave memory once the plugin has packed its own
        assert mapped_mb(bf16.runner.folder / INT8_VOCABULARY_IR) < 30  # type: ignore[attr-defined]


def test_streams_run_a_calls_batches_side_by_side_on_openvino_only(
    tiny_bert: Path, cache: Path, reference: Encoder
) -> None:
    """Two OpenVINO streams answer in input order with one stream's vectors; a backend that runs
    one request at a time refuses more than one stream by name; a negative count is refused."""
    one = Encoder(str(tiny_bert), device="cpu", backend="openvino", cache_dir=cache, batch_size=2)
    two = Encoder(
        str(tiny_bert), device="cpu", backend="openvino", cache_dir=cache, batch_size=2, streams=2
    )
    assert (one.runner.parallel_requests, two.runner.parallel_requests) == (1, 2)
    assert two.runner.compiled.get_property("NUM_STREAMS") == 2  # type: ignore[attr-defined]
    np.testing.assert_allclose(two.encode(TEXTS), one.encode(TEXTS), atol=1e-5)
    for backend in ("torch", "onnx"):
        with pytest.raises(UsageError, match=f"streams=2 needs an OpenVINO backend; {backend}"):
            Encoder(str(tiny_bert), device="cpu", backend=backend, cache_dir=cache, streams=2)
    with pytest.raises(UsageError, match="streams must be 0"):
        Encoder(str(tiny_bert), device="cpu", backend="openvino", cache_dir=cache, streams=-1)
