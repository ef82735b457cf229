"""The torch backend on a GPU: `auto` picks it, and its vectors are the CPU's.

Skipped on machines without CUDA (CI's). The real-model test reads only `cuda_texts()`, so a run
on a GPU machine needs no evaluation data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from baihua.core.errors import UsageError
from baihua.encoder import Encoder
from baihua.encoder.backends.calibration import calibration_texts
from baihua.encoder.encoder import Dtype, resolve_device
from baihua.eval.sts import pair_cosines

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

POOLINGS = ["cls", "last-avg", "first-last-avg"]


def cuda_texts() -> list[str]:
    """The calibration set (Chinese and English, up to ~100 tokens) and four passages joined from
    it (about 120, 230, 860 and 1,300 tokens), so batches are ragged and two fill the 512 limit."""
    texts = calibration_texts()
    passages = ["".join(texts[i : i + n]) for i, n in [(0, 20), (20, 40), (60, 50), (96, 28)]]
    return texts + passages


def test_auto_device_and_backend_run_torch_on_the_gpu(tiny_bert: Path) -> None:
    encoder = Encoder(str(tiny_bert), device="auto", backend="auto")
    assert resolve_device("auto") == "cuda"
    assert (encoder.device, encoder.backend, encoder.dtype) == ("cuda", "torch", "float32")


def test_cpu_only_backends_are_refused_on_the_gpu(tiny_bert: Path) -> None:
    with pytest.raises(UsageError, match="runs on the CPU"):
        Encoder(str(tiny_bert), device="cuda", backend="onnx")


@pytest.mark.parametrize(("dtype", "bound"), [("float32", 0.99999), ("bfloat16", 0.99)])
def test_tiny_bert_on_the_gpu_gives_the_cpu_vectors(
    tiny_bert: Path, dtype: Dtype, bound: float
) -> None:
    texts = [f"hello world {i} {'bert ' * (i % 7)} 的一是{i}" for i in range(50)]
    on_cpu = Encoder(str(tiny_bert), device="cpu").encode_poolings(texts, POOLINGS)
    on_gpu = Encoder(str(tiny_bert), device="cuda", dtype=dtype).encode_poolings(texts, POOLINGS)
    for pooling in POOLINGS:
        cosine = pair_cosines(on_gpu.vectors[pooling], on_cpu.vectors[pooling]).min()
        assert cosine >= bound, pooling
    np.testing.assert_array_equal(on_gpu.n_tokens, on_cpu.n_tokens)


@pytest.mark.slow
@pytest.mark.parametrize(("dtype", "bound"), [("float32", 0.9999), ("bfloat16", 0.9995)])
def test_me5_small_on_the_gpu_gives_the_cpu_vectors(dtype: Dtype, bound: float) -> None:
    texts = cuda_texts()
    on_cpu = Encoder("me5-small", device="cpu", backend="torch", max_length=512)
    on_gpu = Encoder("me5-small", device="cuda", dtype=dtype, max_length=512)
    for text_type in ("query", "passage"):
        expected = on_cpu.encode_poolings(texts, POOLINGS, text_type=text_type)
        got = on_gpu.encode_poolings(texts, POOLINGS, text_type=text_type)
        assert got.truncated[-2:].all()  # the two longest passages reach the 512 limit
        for pooling in POOLINGS:
            cosine = pair_cosines(got.vectors[pooling], expected.vectors[pooling]).min()
            assert cosine >= bound, (text_type, pooling, cosine)
