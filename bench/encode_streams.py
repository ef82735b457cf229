"""Bulk encoding one request at a time against OpenVINO's throughput streams, each setting in a
fresh process of its own (as `baihua index build` runs: one encoder per process), as ratios.

    .venv/bin/python bench/encode_streams.py --data-dir ../shared/data/senteval_cn

In one process beside other engines (bench/encode_throughput.py) the streams rows are
handicapped by the other engines' idle thread pools; here nothing else is loaded. Sets: the first
N distinct STS-B test sentences as queries at 64 tokens, and passages of the given token lengths
(built as in encode_throughput.py). Each (backend, set) runs `--rounds` times, the two settings
alternating; medians are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from encode_throughput import passages, sts_sentences

from baihua.encoder import Encoder
from baihua.encoder.models import model_path, resolve_model
from baihua.encoder.tokenizer import TextTokenizer


def child(args: argparse.Namespace) -> None:
    """One measurement: encode the set `--repeats` times after a warm-up; print JSON."""
    spec = resolve_model(args.model)
    if args.length == 0:
        texts, text_type, max_length = sts_sentences(args.data_dir, args.n), "query", 64
    else:
        tokenizer = TextTokenizer.from_pretrained(model_path(spec))
        texts = passages(args.data_dir, tokenizer, spec.passage_prefix, args.length, args.passages)
        text_type, max_length = "passage", args.length
    encoder = Encoder(
        spec, backend=args.backend, pooling="last-avg", max_length=max_length, streams=args.streams
    )
    encoder.encode(texts, text_type=text_type)  # type: ignore[arg-type]
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        encoder.encode(texts, text_type=text_type)  # type: ignore[arg-type]
        times.append(time.perf_counter() - start)
    rate = len(texts) / statistics.median(times)
    print(json.dumps({"rate": rate, "parallel": encoder.runner.parallel_requests}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="senteval_cn folder")
    parser.add_argument("--model", default="me5-small")
    parser.add_argument("--backends", default="openvino-int8,openvino")
    parser.add_argument("--lengths", default="0,128,256,512", help="0: the short sentences")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--passages", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--streams", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    common = [f"--data-dir={args.data_dir}", f"--model={args.model}", f"--n={args.n}",
              f"--passages={args.passages}", f"--repeats={args.repeats}"]  # fmt: skip
    print(f"{'backend':<16} {'set':<22} {'1 stream/s':>11} {'streams/s':>10} {'ratio':>6}")
    for backend in args.backends.split(","):
        for length in [int(x) for x in args.lengths.split(",")]:
            rates: dict[int, list[float]] = {1: [], 0: []}
            parallel = 1
            for _ in range(args.rounds):
                for streams in (1, 0):
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", f"--backend={backend}",
                         f"--length={length}", f"--streams={streams}", *common],
                        check=True, capture_output=True, text=True,
                    ).stdout  # fmt: skip
                    result = json.loads(out.strip().splitlines()[-1])
                    rates[streams].append(result["rate"])
                    parallel = max(parallel, result["parallel"])
            one, many = (statistics.median(rates[s]) for s in (1, 0))
            name = "sentences <= 64 tokens" if length == 0 else f"passages of {length} tokens"
            print(f"{backend:<16} {name:<22} {one:11.1f} {many:10.1f} {many / one:6.2f}"
                  f"   ({parallel} streams; rounds {[round(r) for r in rates[1]]} / "
                  f"{[round(r) for r in rates[0]]})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
