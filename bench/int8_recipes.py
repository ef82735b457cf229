"""openvino-int8 recipes (`Int8Recipe`) for one model against fp32 torch: how a preset's recipe
is chosen. Each recipe is quantised from the model's ONNX export on the fixed calibration set, as
the backend quantises it, then encodes real sentences (last-avg, one request at a time).

    .venv/bin/python bench/int8_recipes.py --data-dir ../shared/data/senteval_cn \
        --recipes "generic; 0.95@-; 0.6@9"

A recipe is `alpha@layers`: SmoothQuant's α (`default`: NNCF's, 0.95) and the layers whose FFN
output projection stays in float (`all`: every layer's, `-`: none); `generic` is the recipe of a
preset that names none (`default@all`). `--texts` are files of the data folder whose first
`--n` distinct sentences are encoded (by default train splits, which the quality gate, on the
test splits, never reads). Speed: the recipes take turns `--repeats` times; the median, as a
ratio to the first recipe's.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from transformers.utils import logging as hf_logging

from baihua.encoder import Encoder, default_cache_dir
from baihua.encoder.backends import Backends, Int8Recipe
from baihua.encoder.backends.export import build_atomically
from baihua.encoder.backends.openvino_backend import OpenVinoBackend
from baihua.encoder.backends.openvino_export import quantize_static_int8
from baihua.encoder.batching import length_sorted_batches, pad
from baihua.encoder.pooling import masked_mean
from baihua.eval.datasets import read_split
from baihua.eval.sts import pair_cosines


def parse_recipe(text: str) -> Int8Recipe:
    text = text.strip()
    if text == "generic":
        return Int8Recipe()
    alpha, _, layers = text.partition("@")
    return Int8Recipe(
        float_ffn_layers=None if layers == "all" else tuple(
            int(i) for i in layers.split(",") if i not in ("", "-")
        ),
        smooth_quant_alpha=None if alpha == "default" else float(alpha),
    )  # fmt: skip


def sentences(data_dir: Path, files: list[str], n: int) -> list[str]:
    """The first `n` distinct sentences of each file, in file order."""
    out: list[str] = []
    for name in files:
        split = read_split(data_dir / name)
        pairs = zip(split.text1, split.text2, strict=True)
        out += list(dict.fromkeys(t for pair in pairs for t in pair))[:n]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="senteval_cn folder")
    parser.add_argument("--model", default="me5-small")
    parser.add_argument("--recipes", default="generic; 0.6@9")
    parser.add_argument("--texts", default="STS-B/STS-B.train.data,BQ/BQ.train.data")
    parser.add_argument("--n", type=int, default=1000, help="sentences of each file")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    hf_logging.set_verbosity_error()

    reference = Encoder(args.model, backend="torch", pooling="last-avg", max_length=64)
    backends = Backends(
        reference.spec.name,
        str(reference.folder),
        cache_dir=default_cache_dir(),
        tokenizer=reference.tokenizer,
        device="cpu",
        num_threads=None,
        prefix=reference.spec.query_prefix,
    )
    fp32 = backends.prepare("onnx")
    texts = sentences(args.data_dir, args.texts.split(","), args.n)
    ids, _ = reference.tokenizer.encode([reference.prefix("query") + t for t in texts], 64)
    order = length_sorted_batches([len(i) for i in ids], 64, 4096)
    batches = [(b, *pad([ids[i] for i in b], reference.tokenizer.pad_id)) for b in order]
    truth = reference.encode(texts)

    def encode(runner: OpenVinoBackend) -> np.ndarray:
        out = np.empty_like(truth)
        for rows, input_ids, mask in batches:
            out[rows] = masked_mean(runner.forward(input_ids, mask, need_first=False).last, mask)
        return out

    recipes = [parse_recipe(r) for r in args.recipes.split(";")]
    runners: dict[str, OpenVinoBackend] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, recipe in enumerate(recipes):
            folder = Path(tmp) / str(i)
            build_atomically(
                folder,
                lambda out, r=recipe: quantize_static_int8(
                    fp32, out, backends.calibration_batches, r
                ),
            )
            runners[recipe.name] = OpenVinoBackend(folder, "openvino-int8", None, None, 1)
        vectors = {name: encode(runner) for name, runner in runners.items()}
        times: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.repeats):
            for name, runner in runners.items():
                start = time.perf_counter()
                encode(runner)
                times[name].append(time.perf_counter() - start)
    print(f"{args.model}: {len(texts)} sentences of {args.texts}, one request at a time")
    print(f"{'recipe':<100} {'min cos':>8} {'mean cos':>9} {'texts/s':>8} {'× first':>7}")
    first = statistics.median(next(iter(times.values())))
    for name, vecs in vectors.items():
        cos = pair_cosines(vecs, truth)
        seconds = statistics.median(times[name])
        print(f"{name:<100} {cos.min():8.5f} {cos.mean():9.6f} {len(texts) / seconds:8.1f} "
              f"{first / seconds:7.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
