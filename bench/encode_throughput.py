"""Encoding throughput of every backend against sentence-transformers loading the same folder,
as ratios measured in one run, with each backend's agreement with fp32 and the share of this
machine's matmul rate it reaches: on short sentences, and on passages of 128, 256 and 512 tokens.

    .venv/bin/python bench/encode_throughput.py --data-dir ../shared/data/senteval_cn

Sentences: the first N distinct sentences of STS-B test (Chinese), encoded as queries at
`--max-length`. Passages (`--passage-lengths`, `--passages` of each): distinct sentences of the
five tasks joined in file order until a passage has at least that many tokens, encoded as
passages at that token limit, so every passage fills it. Every engine encodes each set
`--repeats` times, the engines taking turns within each repeat (so a change of load on a shared
machine hits them alike); medians are reported. sentence-transformers gets the same batch size
(at most `max_batch_tokens` padded tokens, as the encoder) and max length and sorts by length
too, so the comparison is engine against engine. Rows marked "streams" run a call's batches side
by side on OpenVINO's throughput streams, as the bulk commands (`index build`, `embed`) do. The FLOP
rate counts the useful work (real tokens, no padding) of the transformer's matmuls; the
machine's rate is a 1024³ matmul in fp32 and bf16 (torch) and int8 (ONNX Runtime's
MatMulInteger, the kernel the int8 backend runs); OpenVINO's rows are set against the rate of
the same number format.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers.utils import logging as hf_logging

from baihua.encoder import Encoder
from baihua.encoder.encoder import TextType
from baihua.encoder.models import model_path, resolve_model
from baihua.encoder.tokenizer import TextTokenizer

ENGINES = [  # backend, dtype, OpenVINO streams (0: its throughput choice)
    ("torch", "float32", 1),
    ("torch", "bfloat16", 1),
    ("onnx", "float32", 1),
    ("onnx-int8", None, 1),
    ("openvino", "float32", 1),
    ("openvino", None, 1),  # bf16 where the CPU has it
    ("openvino-int8", None, 1),
    ("openvino", None, 0),
    ("openvino-int8", None, 0),
]
TASKS = ["ATEC", "BQ", "LCQMC", "PAWSX", "STS-B"]
MAX_BATCH_TOKENS = 4096


def sts_sentences(data_dir: Path, n: int) -> list[str]:
    path = data_dir / "STS-B" / "STS-B.test.data"
    seen: dict[str, None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        for text in line.split("\t")[:2]:
            seen.setdefault(text)
    return list(seen)[:n]


def passages(
    data_dir: Path, tokenizer: TextTokenizer, prefix: str, length: int, n: int
) -> list[str]:
    """`n` passages of at least `length` tokens (prefix and special tokens included): distinct
    test sentences of the five tasks, in file order, joined by "。" until each is long enough."""
    sentences = dict.fromkeys(
        text
        for task in TASKS
        for line in (data_dir / task / f"{task}.test.data").read_text("utf-8").splitlines()
        for text in line.split("\t")[:2]
    )
    out: list[str] = []
    parts: list[str] = []
    for sentence in sentences:
        parts.append(sentence)
        if tokenizer.encode([prefix + "。".join(parts)], 10**6)[1][0] >= length:
            out.append("。".join(parts))
            parts = []
            if len(out) == n:
                return out
    raise ValueError(f"the test sentences make only {len(out)} passages of {length} tokens")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def useful_flops(encoder: Encoder, texts: list[str], max_length: int, text_type: TextType) -> float:
    """Multiply-adds × 2 of the encoder layers on the real tokens: projections and FFN
    (2·n·(4H² + 2H·F)) plus attention scores and mixing (4·n²·H), per layer."""
    config = encoder.runner.model.config if hasattr(encoder.runner, "model") else None
    assert config is not None, "pass the torch encoder"
    h, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    prefixed = [encoder.prefix(text_type) + t for t in texts]
    ids, _ = encoder.tokenizer.encode(prefixed, max_length)
    lengths = np.array([len(i) for i in ids])
    return float(layers * (2 * lengths * (4 * h * h + 2 * h * f) + 4 * lengths**2 * h).sum())


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    """The best of `repeats` runs after a warm-up: a peak, which another process's burst only
    lowers."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_rate(run: Callable[[], object], flops: float, repeats: int = 10) -> float:
    return flops / best_seconds(run, repeats)


def machine_rates(size: int = 1024) -> dict[str, float]:
    """FLOP/s of one size³ matmul: torch fp32, torch bf16, ONNX Runtime int8 and fp32."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    flops = 2.0 * size**3
    a, b = torch.randn(size, size), torch.randn(size, size)
    a16, b16 = a.bfloat16(), b.bfloat16()
    rates = {
        "torch float32": matmul_rate(lambda: a @ b, flops),
        "torch bfloat16": matmul_rate(lambda: a16 @ b16, flops),
    }
    for name, kind, op in (
        ("onnxruntime int8", TensorProto.UINT8, "MatMulInteger"),
        ("onnxruntime float32", TensorProto.FLOAT, "MatMul"),
    ):
        b_kind = TensorProto.INT8 if kind == TensorProto.UINT8 else kind
        out_kind = TensorProto.INT32 if kind == TensorProto.UINT8 else kind
        graph = helper.make_graph(
            [helper.make_node(op, ["A", "B"], ["Y"])],
            "matmul",
            [helper.make_tensor_value_info("A", kind, [size, size]),
             helper.make_tensor_value_info("B", b_kind, [size, size])],
            [helper.make_tensor_value_info("Y", out_kind, [size, size])],
        )  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8  # what onnxruntime 1.31 reads
        with tempfile.TemporaryDirectory() as tmp:
            onnx.save(model, f"{tmp}/m.onnx")
            session = ort.InferenceSession(f"{tmp}/m.onnx", providers=["CPUExecutionProvider"])
        if kind == TensorProto.UINT8:
            feeds = {"A": np.random.randint(0, 255, (size, size), dtype=np.uint8),
                     "B": np.random.randint(-127, 127, (size, size), dtype=np.int8)}  # fmt: skip
        else:
            feeds = {"A": a.numpy(), "B": b.numpy()}
        rates[name] = matmul_rate(lambda s=session, f=feeds: s.run(None, f), flops)
    return rates


PEAK_OF = {
    ("torch", "float32"): "torch float32",
    ("torch", "bfloat16"): "torch bfloat16",
    ("onnx", "float32"): "onnxruntime float32",
    ("onnx-int8", "int8"): "onnxruntime int8",
    # OpenVINO against the same kernels' rates (its own matmul is not timed separately)
    ("openvino", "float32"): "onnxruntime float32",
    ("openvino", "bfloat16"): "torch bfloat16",
    ("openvino-int8", "int8"): "onnxruntime int8",
}


def engine_name(encoder: Encoder, streams: int) -> str:
    name = f"{encoder.backend} {encoder.dtype}"
    return name if streams == 1 else f"{name} x{encoder.runner.parallel_requests} streams"


def run_engines(
    runs: dict[str, Callable[[], np.ndarray]], repeats: int
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Median seconds of each run over `repeats` turns (after a warm-up), and its vectors."""
    for run in runs.values():
        run()  # warm-up: first calls allocate
    times: dict[str, list[float]] = {name: [] for name in runs}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            vectors[name] = run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="senteval_cn folder")
    parser.add_argument("--model", default="me5-small")
    parser.add_argument("--n", type=int, default=1000, help="short sentences; 0 for none")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--passage-lengths", default="128,256,512", help="'' for none")
    parser.add_argument("--passages", type=int, default=128, help="passages of each length")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    hf_logging.set_verbosity_error()

    from sentence_transformers import SentenceTransformer, models

    spec = resolve_model(args.model)
    sets: list[tuple[str, TextType, int, list[str]]] = []
    if args.n:
        sets.append((f"sentences (STS-B, <= {args.max_length} tokens)", "query", args.max_length,
                     sts_sentences(args.data_dir, args.n)))  # fmt: skip
    tokenizer = TextTokenizer.from_pretrained(model_path(spec))
    for length in [int(x) for x in args.passage_lengths.split(",") if x]:
        texts = passages(args.data_dir, tokenizer, spec.passage_prefix, length, args.passages)
        sets.append((f"passages of {length} tokens", "passage", length, texts))
    print(f"batch {args.batch_size} (at most {MAX_BATCH_TOKENS} padded tokens), "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    rates = machine_rates()
    print("machine matmul rates (1024³): " + ", ".join(
        f"{name} {rate / 1e9:.0f} GFLOP/s" for name, rate in rates.items()))  # fmt: skip
    longest = max(length for _, _, length, _ in sets)
    transformer = models.Transformer(model_path(spec), max_seq_length=longest)
    st = SentenceTransformer(
        modules=[transformer, models.Pooling(transformer.get_word_embedding_dimension(), "mean")],
        device="cpu",
    )
    common = dict(pooling="last-avg", max_length=longest, batch_size=args.batch_size,
                  max_batch_tokens=MAX_BATCH_TOKENS, device="cpu")  # fmt: skip
    ours = {
        engine_name(encoder, streams): encoder
        for encoder, streams in (
            (Encoder(spec, backend=b, dtype=d, streams=s, **common), s)  # type: ignore[arg-type]
            for b, d, s in ENGINES
        )
    }
    assert len(ours) == len(ENGINES), "two engines run the same backend and dtype"
    auto = Encoder(spec, backend="auto", **common)  # type: ignore[arg-type]
    reference = ours["torch float32"]
    for title, text_type, max_length, texts in sets:
        prefix = reference.prefix(text_type)
        st.max_seq_length = max_length
        st_batch = min(args.batch_size, MAX_BATCH_TOKENS // max_length)
        runs: dict[str, Callable[[], np.ndarray]] = {
            "sentence-transformers": lambda p=[prefix + t for t in texts], b=st_batch: st.encode(
                p, batch_size=b, convert_to_numpy=True
            )
        }
        for name, encoder in ours.items():
            runs[name] = lambda e=encoder, t=texts, k=text_type, m=max_length: e.encode_poolings(
                t, ["last-avg"], text_type=k, max_length=m
            ).vectors["last-avg"]
        seconds, vectors = run_engines(runs, args.repeats)
        flops = useful_flops(reference, texts, max_length, text_type)
        start = time.perf_counter()
        reference.tokenizer.encode([prefix + t for t in texts], max_length)
        tokenize_s = time.perf_counter() - start

        n, t_st, fp32 = len(texts), seconds["sentence-transformers"], vectors["torch float32"]
        print(f"\n{title}: {n} texts, sentence-transformers batch {st_batch}")
        print(f"{'engine':<32} {'texts/s':>8} {'× s-t':>6} {'min cos':>8} {'mean cos':>9} "
              f"{'GFLOP/s':>8} {'of peak':>7}")  # fmt: skip
        for name in runs:
            cos = cosines(vectors[name], fp32)
            achieved = flops / seconds[name]
            encoder = ours.get(name)
            key = ("torch", "float32") if encoder is None else (encoder.backend, encoder.dtype)
            peak = rates[PEAK_OF[key]]
            print(f"{name:<32} {n / seconds[name]:8.1f} {t_st / seconds[name]:6.2f} "
                  f"{cos.min():8.5f} {cos.mean():9.6f} {achieved / 1e9:8.1f} "
                  f"{achieved / peak:7.1%}")  # fmt: skip
        picked = f"{auto.backend} {auto.dtype}"
        bulk = next(name for name in runs if name.startswith(picked) and "streams" in name)
        print(
            f"auto picks {picked}: {t_st / seconds[picked]:.2f}x sentence-transformers one "
            f"request at a time, {t_st / seconds[bulk]:.2f}x on streams (bulk commands); "
            f"tokenisation takes {tokenize_s / seconds[picked]:.0%} of its encode time"
        )


if __name__ == "__main__":
    main()
