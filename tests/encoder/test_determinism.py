"""One spec, one set of vectors, on the real model: every backend `auto` may pick gives the same
vectors (cosine ≥ 0.99999 per text) with 1 or 2 threads and whatever batch a text shares.
(onnx-int8 runs each text alone for this: see OnnxBackend._run_each_text.) One exception,
measured: openvino in bf16, whose graph comes from OpenVINO's PyTorch frontend, moves a few texts
with their batch's padding (12 of these 96 by 1 - cosine up to 1.2e-5, a bf16 rounding step);
threads still change nothing, and its bar for batch composition is 0.99998.

bench/thread_determinism.py measures the same on more sentences and with 4 threads too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from baihua.encoder import Encoder
from baihua.encoder.backends.openvino_backend import cpu_has_bf16

BACKENDS = [
    ("torch", "float32"),
    ("torch", "bfloat16"),
    ("onnx", None),
    ("onnx-int8", None),
    ("openvino", None),
    ("openvino-int8", None),
]


def sts_sentences(shared_data: Path, n: int = 96) -> list[str]:
    lines = (shared_data / "senteval_cn" / "STS-B" / "STS-B.test.data").read_text(encoding="utf-8")
    return list(dict.fromkeys(t for line in lines.splitlines() for t in line.split("\t")[:2]))[:n]


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(
        np.min(np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend,dtype", BACKENDS)
def test_vectors_do_not_depend_on_threads_or_batch_composition(
    shared_data: Path, backend: str, dtype: str | None
) -> None:
    texts = sts_sentences(shared_data)

    def encode(threads: int, batch_size: int = 32, order: slice = slice(None)) -> np.ndarray:
        encoder = Encoder(
            "me5-small",
            backend=backend,
            dtype=dtype,  # type: ignore[arg-type]
            device="cpu",
            num_threads=threads,
            batch_size=batch_size,
        )
        return encoder.encode(texts[order])[order]

    one_thread = encode(1)
    assert min_cosine(one_thread, encode(2)) >= 0.99999
    other_batches = encode(2, batch_size=7, order=slice(None, None, -1))
    bf16_openvino = backend == "openvino" and cpu_has_bf16()
    assert min_cosine(one_thread, other_batches) >= (0.99998 if bf16_openvino else 0.99999)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["openvino", "openvino-int8"])
def test_openvino_streams_give_the_vectors_of_one_request_at_a_time(
    shared_data: Path, backend: str
) -> None:
    """Bulk encoding runs a call's batches side by side on OpenVINO streams (one thread each):
    the same vectors, in input order, as one request at a time on every thread."""
    texts = sts_sentences(shared_data)

    def encode(streams: int, parallel: int | None) -> np.ndarray:
        encoder = Encoder("me5-small", backend=backend, device="cpu", batch_size=8, streams=streams)
        assert parallel is None or encoder.runner.parallel_requests == parallel
        return encoder.encode(texts)

    one = encode(1, parallel=1)
    assert min_cosine(one, encode(2, parallel=2)) >= 0.99999
    assert min_cosine(one, encode(0, parallel=None)) >= 0.99999  # OpenVINO's own choice
