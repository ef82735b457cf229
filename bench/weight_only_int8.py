"""Weight-only int8 against the static int8 copy (`openvino-int8`): NNCF's `compress_weights`
(int8, symmetric, per output channel) on the bf16/fp32 copy converted by OpenVINO's PyTorch
frontend, run by the CPU plugin, which quantises each FullyConnected's activations on the fly
(`DYNAMIC_QUANTIZATION_GROUP_SIZE`; 0 turns that off). Static int8 needs calibration and loses
agreement on long texts (min cosine 0.987 at 512 tokens); weight-only int8 needs none. This
measures whether it is fast enough to replace it: texts/s as ratios to `openvino-int8` in one
run, and min / mean cosine to fp32.

    .venv/bin/python bench/weight_only_int8.py --data-dir ../shared/data/senteval_cn

Sets as in `encode_throughput.py`: 1,000 STS-B sentences (queries, 64 tokens at most) and 64
passages each of 128, 256 and 512 tokens; engines take turns, medians of `--repeats`.
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
from pathlib import Path
from typing import Any

from encode_throughput import cosines, passages, run_engines, sts_sentences

from baihua.encoder import Encoder
from baihua.encoder.backends.export import META_FILE, read_meta
from baihua.encoder.backends.openvino_backend import (
    PRECISIONS,
    RUNTIME_CACHE_CAPACITY,
    OpenVinoBackend,
)
from baihua.encoder.backends.openvino_export import IR_FILE


def compress(fp32_folder: Path, out: Path) -> None:
    """The fp32 copy with every MatMul's and the embedding table's weights in int8."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32_folder / IR_FILE))
    compressed = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_SYM)
    ov.save_model(compressed, str(out / IR_FILE), compress_to_fp16=False)
    meta = read_meta(fp32_folder)
    assert meta is not None
    (out / META_FILE).write_text(json.dumps({**meta, "dtype": "int8"}))


def weight_only(folder: Path, precision: str, extra: dict[str, Any]) -> Encoder:
    """An encoder whose runner is the compressed copy compiled with `extra` settings."""
    import openvino as ov

    encoder = Encoder("me5-small", backend="openvino", dtype=precision)
    runner = OpenVinoBackend(folder, "openvino weight-only int8", None, precision=precision)
    config = {
        "INFERENCE_PRECISION_HINT": PRECISIONS[precision],
        "CPU_RUNTIME_CACHE_CAPACITY": RUNTIME_CACHE_CAPACITY,
        "PERFORMANCE_HINT": "LATENCY",
        **extra,
    }
    runner.compiled = ov.Core().compile_model(str(folder / IR_FILE), "CPU", config)
    encoder.runner = runner
    return encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="senteval_cn folder")
    parser.add_argument("--passages", type=int, default=64, help="passages of each length")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    engines = {
        "openvino fp32": Encoder("me5-small", backend="openvino", dtype="float32"),
        "openvino bf16": Encoder("me5-small", backend="openvino", dtype="bfloat16"),
        "openvino-int8 (static)": Encoder("me5-small", backend="openvino-int8"),
    }
    fp32_folder = engines["openvino fp32"].runner.folder  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        compress(fp32_folder, folder)
        engines["weight-only int8, bf16"] = weight_only(folder, "bfloat16", {})
        engines["weight-only int8, fp32"] = weight_only(folder, "float32", {})
        engines["weight-only int8, bf16, no dynamic quantisation"] = weight_only(
            folder, "bfloat16", {"DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
        )
        tokenizer = engines["openvino fp32"].tokenizer
        sets = {"STS-B sentences <= 64 tokens": (sts_sentences(args.data_dir, 1000), 64, "query")}
        for length in (128, 256, 512):
            texts = passages(args.data_dir, tokenizer, "passage: ", length, args.passages)
            sets[f"passages of {length} tokens"] = (texts, length, "passage")
        for set_name, (texts, max_length, text_type) in sets.items():
            for encoder in engines.values():
                encoder.max_length = max_length
            runs = {
                name: functools.partial(encoder.encode, texts, text_type=text_type)
                for name, encoder in engines.items()
            }
            seconds, vectors = run_engines(runs, args.repeats)
            reference = seconds["openvino-int8 (static)"]
            print(f"\n{set_name}: {len(texts)} texts")
            print(f"{'engine':50} texts/s  × static int8  min cos  mean cos")
            for name in engines:
                agreement = cosines(vectors[name], vectors["openvino fp32"])
                print(f"{name:50} {len(texts) / seconds[name]:7.1f}  "
                      f"{reference / seconds[name]:12.2f}  {agreement.min():.5f}  "
                      f"{agreement.mean():.6f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
