"""Encoding throughput of our Encoder (fp32 and bf16 autocast) against sentence-transformers
loading the same folder, as ratios measured in one run.

    .venv/bin/python bench/encode_throughput.py --data-dir ../shared/data/senteval_cn

Sentences: the first N distinct sentences of STS-B test (Chinese). Each engine encodes them
`--repeats` times; the median is reported. sentence-transformers gets the same batch size and
max length and sorts by length too, so the comparison is engine against engine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers.utils import logging as hf_logging

from baihua.encoder import Encoder
from baihua.encoder.models import model_path, resolve_model


def sts_sentences(data_dir: Path, n: int) -> list[str]:
    path = data_dir / "STS-B" / "STS-B.test.data"
    seen: dict[str, None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        for text in line.split("\t")[:2]:
            seen.setdefault(text)
    return list(seen)[:n]


def median_seconds(run: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
    assert out is not None
    return statistics.median(times), out


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="senteval_cn folder")
    parser.add_argument("--model", default="me5-small")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    hf_logging.set_verbosity_error()

    from sentence_transformers import SentenceTransformer, models

    texts = sts_sentences(args.data_dir, args.n)
    spec = resolve_model(args.model)
    prefixed = [spec.query_prefix + t for t in texts]
    folder = model_path(spec)
    print(f"{len(texts)} sentences, batch {args.batch_size}, max length {args.max_length}, "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip

    transformer = models.Transformer(folder, max_seq_length=args.max_length)
    st = SentenceTransformer(
        modules=[transformer, models.Pooling(transformer.get_word_embedding_dimension(), "mean")],
        device="cpu",
    )
    ours = Encoder(spec, pooling="last-avg", max_length=args.max_length,
                   batch_size=args.batch_size, device="cpu")  # fmt: skip
    ours_bf16 = Encoder(spec, pooling="last-avg", max_length=args.max_length,
                        batch_size=args.batch_size, device="cpu", dtype="bfloat16")  # fmt: skip

    ours.encode(texts[:64])  # warm-up: first calls allocate
    st.encode(prefixed[:64], batch_size=args.batch_size)
    t_st, v_st = median_seconds(
        lambda: st.encode(prefixed, batch_size=args.batch_size, convert_to_numpy=True),
        args.repeats,
    )
    t_fp32, v_fp32 = median_seconds(lambda: ours.encode(texts), args.repeats)
    t_bf16, v_bf16 = median_seconds(lambda: ours_bf16.encode(texts), args.repeats)
    t_three, _ = median_seconds(
        lambda: ours.encode_poolings(texts, ["last-avg", "cls", "first-last-avg"]).vectors["cls"],
        args.repeats,
    )

    n = len(texts)
    cos_st = cosines(v_fp32, v_st).min()
    cos_bf16 = cosines(v_bf16, v_fp32).min()
    print(f"sentence-transformers fp32: {n / t_st:8.1f} sentences/s")
    print(f"baihua fp32:          {n / t_fp32:8.1f} sentences/s  ratio {t_st / t_fp32:.2f}x  "
          f"min cosine to ST {cos_st:.6f}")  # fmt: skip
    print(f"baihua bf16 autocast: {n / t_bf16:8.1f} sentences/s  ratio {t_st / t_bf16:.2f}x  "
          f"min cosine to fp32 {cos_bf16:.6f}")  # fmt: skip
    print(f"baihua fp32, 3 poolings from one pass: {n / t_three:8.1f} sentences/s")


if __name__ == "__main__":
    main()
