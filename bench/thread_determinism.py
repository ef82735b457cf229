"""One spec, one set of vectors: how far each backend's vectors move with the thread count and
the batch composition.

    .venv/bin/python bench/thread_determinism.py --data-dir ../shared/data/senteval_cn -n 400

Sentences: the first N distinct sentences of STS-B test (Chinese). Each backend encodes them with
1, 2 and 4 threads (batch 32), with 2 threads in batches of 1 and 7 in reversed order, and in a
Ray actor of one thread built from the same settings as `--engine ray`'s actors; the table shows,
per backend, the smallest cosine between any two of those runs of the same text (1.0 = the same
vectors) and the largest absolute difference of a component.
"""

from __future__ import annotations

import argparse
import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np

from baihua.encoder import Encoder
from baihua.serving.components import build_encoder
from baihua.serving.settings import Settings, load_settings

BACKENDS = [
    ("torch", "float32"),
    ("torch", "bfloat16"),
    ("onnx", None),
    ("onnx-int8", None),
    ("openvino", "float32"),
    ("openvino", None),  # bf16 where the CPU has it
    ("openvino-int8", None),
]


def sentences(data_dir: Path, n: int) -> list[str]:
    lines = (data_dir / "STS-B" / "STS-B.test.data").read_text(encoding="utf-8").splitlines()
    return list(dict.fromkeys(t for line in lines for t in line.split("\t")[:2]))[:n]


def runs(model: str, backend: str, dtype: str | None, texts: list[str]) -> dict[str, np.ndarray]:
    out = {}
    for threads in (1, 2, 4):
        encoder = Encoder(model, backend=backend, dtype=dtype, device="cpu", num_threads=threads)  # type: ignore[arg-type]
        out[f"{threads} threads"] = encoder.encode(texts)
    for batch in (1, 7):
        encoder = Encoder(
            model,
            backend=backend,
            dtype=dtype,
            device="cpu",
            num_threads=2,
            batch_size=batch,  # type: ignore[arg-type]
        )
        out[f"batch {batch}"] = encoder.encode(texts[::-1])[::-1]
    return out


def ray_run(model: str, backend: str, dtype: str | None, texts: list[str]) -> np.ndarray:
    """The texts encoded in a Ray actor process of one thread, as `--engine ray` encodes them."""
    import ray

    settings = load_settings(model=model, backend=backend, dtype=dtype, num_threads=1)

    @ray.remote(num_cpus=1)
    def encode(fields: dict[str, Any], texts: list[str]) -> np.ndarray:
        return build_encoder(Settings.model_construct(**fields)).encode(texts)

    return ray.get(encode.remote(settings.model_dump(), texts))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("-n", type=int, default=400)
    parser.add_argument("--model", default="me5-small")
    parser.add_argument("--no-ray", action="store_true", help="Skip the Ray actor runs.")
    args = parser.parse_args()
    if not args.no_ray:
        import ray

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    texts = sentences(args.data_dir, args.n)
    print(f"{len(texts)} sentences, model {args.model}")
    print(
        "| backend | dtype | min cosine, threads 1/2/4 | min cosine, batches"
        " | min cosine, local/Ray | max abs diff |"
    )
    print("|---|---|---|---|---|---|")
    for backend, dtype in BACKENDS:
        vectors = runs(args.model, backend, dtype, texts)
        if not args.no_ray:
            vectors["ray"] = ray_run(args.model, backend, dtype, texts)
        threads = [k for k in vectors if k.endswith("threads")]
        by_threads = min(
            cosines(vectors[a], vectors[b]).min() for a, b in itertools.combinations(threads, 2)
        )
        by_batch = min(
            cosines(vectors["2 threads"], vectors[k]).min() for k in ("batch 1", "batch 7")
        )
        by_ray = cosines(vectors["2 threads"], vectors["ray"]).min() if "ray" in vectors else None
        diff = max(np.abs(a - b).max() for a, b in itertools.combinations(vectors.values(), 2))
        row = [
            backend,
            dtype or "default",
            f"{by_threads:.7f}",
            f"{by_batch:.7f}",
            "—" if by_ray is None else f"{by_ray:.7f}",
            f"{diff:.2e}",
        ]
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
