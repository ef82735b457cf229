"""Where an OpenVINO backend's time goes: the CPU plugin's own per-node counters, summed by layer
kind and kernel, for one batch of texts of one length, on the compile the backend gives texts
of that length (the short-text one up to SHORT_TEXT_TOKENS tokens).

    .venv/bin/python bench/node_profile.py --backend openvino-int8 --length 40 --batch 64
    .venv/bin/python bench/node_profile.py --backend openvino --length 512 --batch 8

The backend is built as the encoder builds it (same graph rewrites, same settings); only the
counters are switched on, by adding PERF_COUNT to every compile in this process. One thread by
default, so the kernels' times add up to the wall time.
"""

from __future__ import annotations

import argparse
import collections
from typing import Any

import numpy as np
import openvino as ov

from baihua.encoder import Encoder
from baihua.encoder.backends.openvino_backend import SHORT_TEXT_TOKENS


def count_every_compile() -> None:
    """Make every `ov.Core.compile_model` in this process keep per-node counters."""
    compile_model = ov.Core.compile_model

    def counted(self: ov.Core, model: Any, device: str, config: dict[str, Any]) -> Any:
        return compile_model(self, model, device, {**config, "PERF_COUNT": True})

    ov.Core.compile_model = counted  # type: ignore[method-assign]


def node_times(
    compiled: Any, batch: int, length: int, repeats: int
) -> tuple[float, collections.Counter[str], collections.Counter[str]]:
    """Seconds a run (the counters' sum), and seconds and count by "kind kernel", per run."""
    request = compiled.create_infer_request()
    rng = np.random.default_rng(0)
    inputs = {
        "input_ids": rng.integers(5, 1000, (batch, length)),
        "attention_mask": np.ones((batch, length), dtype=np.int64),
    }
    for _ in range(3):
        request.infer(inputs)  # warm-up: packing, kernel generation
    seconds: collections.Counter[str] = collections.Counter()
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(repeats):
        request.infer(inputs)
        for node in request.profiling_info:
            key = f"{node.node_type} {node.exec_type}"
            seconds[key] += node.real_time.total_seconds() / repeats
            counts[key] += 1
    return sum(seconds.values()), seconds, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="me5-small")
    parser.add_argument("--backend", default="openvino-int8", help="openvino or openvino-int8")
    parser.add_argument("--dtype", default=None, help="openvino: bfloat16 or float32")
    parser.add_argument("--length", type=int, default=40, help="tokens a text")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()

    count_every_compile()
    encoder = Encoder(
        args.model, backend=args.backend, dtype=args.dtype, num_threads=args.threads, device="cpu"
    )
    runner: Any = encoder.runner
    short = args.length <= SHORT_TEXT_TOKENS
    compiled = runner.compiled_short if short else runner.compiled
    total, seconds, counts = node_times(compiled, args.batch, args.length, args.repeats)
    print(f"{args.model} {runner.name} ({runner.dtype}; {runner.variant}), "
          f"{'short-text' if short else 'long-text'} compile, {args.threads} thread(s): "
          f"{total * 1000:.1f} ms for {args.batch} texts of {args.length} tokens")  # fmt: skip
    print("| share | ms | layer kind, kernel | nodes |\n|---|---|---|---|")
    for key, value in seconds.most_common(args.top):
        nodes = counts[key] // args.repeats
        print(f"| {value / total:.1%} | {value * 1000:.2f} | {key} | {nodes} |")


if __name__ == "__main__":
    main()
