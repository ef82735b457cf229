"""How fast an engine built of this machine's fastest kernels could encode long passages, against
sentence-transformers: attention's fused kernel and the linear layers, each timed alone, give a
ceiling on the ratio no choice of graph, batch or stream can pass.

    .venv/bin/python bench/attention_cost.py --data-dir ../shared/data/senteval_cn

For each passage length, on one thread: the model's attention (its heads and head size) over a
batch of passages as OpenVINO's CPU plugin runs it (one ScaledDotProductAttention node, which the
plugin fuses into one generated kernel; compiled in bf16 and in f32 for the batch's shape, and
in bf16 with batch and length known only at run time, as the backend compiles it) and as torch
runs it (`scaled_dot_product_attention`, its flash kernel, bf16 and fp32), each with an additive
mask over keys and a scale of 1, as the `openvino` backend gives it (the scale folded into the
queries); and the model's linear layers (query, key, value and output projections, FFN in with
its GELU, FFN out) in bf16.
sentence-transformers encodes the same passages (`passages` of `encode_throughput.py`) on every
core. The ceiling is sentence-transformers' seconds a passage over (layers × (the faster
attention kernel + the linear layers)) a passage divided by the cores: every other node (layer
norms, sums, the activation, transposes, the vocabulary lookup) free, and streams scaling
perfectly over the cores. `openvino` on its throughput streams, what bulk commands run, is timed
on the same passages for comparison. Every time is the best of `--repeats` (a peak).
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from encode_throughput import MAX_BATCH_TOKENS, best_seconds, passages
from transformers import AutoConfig
from transformers.utils import logging as hf_logging

from baihua.encoder import Encoder
from baihua.encoder.models import model_path, resolve_model
from baihua.encoder.tokenizer import TextTokenizer


def openvino_run(
    model: object, precision: str, feeds: dict[str, np.ndarray]
) -> Callable[[], object]:
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": 1,
              "PERFORMANCE_HINT": "LATENCY"}  # fmt: skip
    request = ov.Core().compile_model(model, "CPU", config).create_infer_request()
    return lambda: request.infer(feeds)


def attention_model(
    batch: int, length: int, heads: int, head_dim: int, layers: int, shapes_known: bool
) -> object:
    """`layers` attentions in a row in OpenVINO, with the transposes to and from heads around
    each, as in the model's graph; batch and length fixed at compile time or, as the backend
    compiles them, known only at run time."""
    import openvino as ov
    import openvino.opset13 as ops

    hidden = heads * head_dim
    rows = [batch, length] if shapes_known else [-1, -1]
    x_in = ops.parameter([*rows, hidden], np.float32, name="x")
    mask_in = ops.parameter([rows[0], 1, 1, rows[1]], np.float32, name="mask")
    h = x_in.output(0)
    for _ in range(layers):
        split = ops.transpose(ops.reshape(h, [0, 0, heads, head_dim], True), [0, 2, 1, 3])
        mixed = ops.scaled_dot_product_attention(split, split, split, mask_in, np.float32(1))
        merged = ops.transpose(mixed, [0, 2, 1, 3])
        h = ops.reshape(merged, [0, 0, hidden], True).output(0)
    return ov.Model([h], [x_in, mask_in])


def attention_seconds(
    batch: int, length: int, heads: int, head_dim: int, layers: int, repeats: int
) -> dict[str, float]:
    """`layers` attentions in a row over `batch` passages, each engine on one thread."""
    hidden = heads * head_dim
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, length, hidden), dtype=np.float32)
    mask = np.zeros((batch, 1, 1, length), dtype=np.float32)
    feeds = {"x": x, "mask": mask}
    timed = {  # name: (precision, shapes known at compile time)
        "openvino bf16": ("bf16", True),
        "openvino bf16 shapes at run time": ("bf16", False),
        "openvino f32": ("f32", True),
    }
    seconds = {
        name: best_seconds(
            openvino_run(
                attention_model(batch, length, heads, head_dim, layers, known), precision, feeds
            ),
            repeats,
        )
        for name, (precision, known) in timed.items()
    }
    heads_first = torch.from_numpy(x).view(batch, length, heads, head_dim).transpose(1, 2)
    for dtype, name in ((torch.bfloat16, "torch bf16"), (torch.float32, "torch fp32")):
        t, m = heads_first.to(dtype), torch.from_numpy(mask).to(dtype)

        def run(t: torch.Tensor = t, m: torch.Tensor = m) -> torch.Tensor:
            with torch.inference_mode():
                for _ in range(layers):
                    t = torch.nn.functional.scaled_dot_product_attention(
                        t, t, t, attn_mask=m, scale=1.0
                    )
            return t

        seconds[name] = best_seconds(run, repeats)
    return seconds


def linear_seconds(rows: int, hidden: int, intermediate: int, layers: int, repeats: int) -> float:
    """`layers` layers' projections in a row over `rows` tokens (query, key, value, output,
    FFN in with its GELU, FFN out), OpenVINO bf16 on one thread."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)

    def dense(h: object, n_in: int, n_out: int) -> object:
        weights = ops.constant(rng.standard_normal((n_out, n_in), dtype=np.float32) / n_in**0.5)
        return ops.add(
            ops.matmul(h, weights, False, True), ops.constant(np.zeros(n_out, np.float32))
        )

    x_in = ops.parameter([rows, hidden], np.float32, name="x")
    h: object = x_in
    for _ in range(layers):
        for _ in range(4):
            h = dense(h, hidden, hidden)
        h = dense(ops.gelu(dense(h, hidden, intermediate), "erf"), intermediate, hidden)
    feeds = {"x": rng.standard_normal((rows, hidden), dtype=np.float32)}
    return best_seconds(openvino_run(ov.Model([h], [x_in]), "bf16", feeds), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="senteval_cn folder")
    parser.add_argument("--model", default="me5-small")
    parser.add_argument("--lengths", default="128,256,512")
    parser.add_argument("--passages", type=int, default=32, help="passages of each length")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    hf_logging.set_verbosity_error()

    from sentence_transformers import SentenceTransformer, models

    spec = resolve_model(args.model)
    config = AutoConfig.from_pretrained(model_path(spec))
    heads, layers = config.num_attention_heads, config.num_hidden_layers
    hidden, intermediate = config.hidden_size, config.intermediate_size
    cores = os.cpu_count() or 1
    tokenizer = TextTokenizer.from_pretrained(model_path(spec))
    lengths = [int(x) for x in args.lengths.split(",")]
    transformer = models.Transformer(model_path(spec), max_seq_length=max(lengths))
    st = SentenceTransformer(
        modules=[transformer, models.Pooling(transformer.get_word_embedding_dimension(), "mean")],
        device="cpu",
    )
    bulk = Encoder(spec, backend="openvino", streams=0, pooling="last-avg",
                   max_length=max(lengths), max_batch_tokens=MAX_BATCH_TOKENS)  # fmt: skip
    print(f"{args.model}: {layers} layers, {heads} heads of {hidden // heads}, FFN {intermediate}; "
          f"{cores} cores; kernels on one thread, per layer × {layers} layers")  # fmt: skip
    print("| tokens | s-t ms a passage | attention ns a score: openvino bf16 / bf16 shapes at run "
          "time / f32, torch bf16 / fp32 | attention ms a passage (fastest) | linear layers ms a "
          "passage | ceiling × s-t | openvino on streams × s-t |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for length in lengths:
        texts = passages(args.data_dir, tokenizer, spec.passage_prefix, length, args.passages)
        batch = MAX_BATCH_TOKENS // length
        torch.set_num_threads(cores)
        st.max_seq_length = length
        prefixed = [spec.passage_prefix + t for t in texts]
        st_s = best_seconds(functools.partial(st.encode, prefixed, batch_size=batch), args.repeats)
        encode = functools.partial(
            bulk.encode_poolings, texts, ["last-avg"], text_type="passage", max_length=length
        )
        ours_s = best_seconds(encode, args.repeats)
        torch.set_num_threads(1)
        attention = attention_seconds(batch, length, heads, hidden // heads, layers, args.repeats)
        scores = layers * batch * heads * length * length
        fastest = min(attention.values()) / batch
        linear = linear_seconds(batch * length, hidden, intermediate, layers, args.repeats) / batch
        st_passage = st_s / len(texts)
        per_score = " / ".join(f"{attention[name] / scores * 1e9:.2f}" for name in attention)
        print(f"| {length} | {st_passage * 1e3:.1f} | {per_score} | {fastest * 1e3:.1f} | "
              f"{linear * 1e3:.1f} | {st_passage / ((fastest + linear) / cores):.2f} | "
              f"{st_s / ours_s:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
