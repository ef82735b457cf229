"""The `openvino` backend's attention rewrites (`attention_scale_in_queries`, `additive_key_mask`)
on against off: the bf16 graph as the backend prepares it, compiled twice on one thread, the two
taking turns call by call on the same batch, so each pair of calls meets the same machine.

    .venv/bin/python bench/attention_rewrites.py --data-dir ../shared/data/senteval_cn

Batches as the encoder forms them (at most 4,096 padded tokens): 32 STS-B test sentences of
median length on the short-text compile (no fused attention kernel), and passages of 128, 256
and 512 tokens (`passages` of `encode_throughput.py`) on the other. Prints the median call time
of each and the median and quartiles of the per-pair ratio (off / on: above 1, the rewrites are
faster), and the lowest cosine between the two's mean-pooled vectors.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from encode_throughput import MAX_BATCH_TOKENS, cosines, passages, sts_sentences

from baihua.encoder import Encoder
from baihua.encoder.backends.export import read_meta
from baihua.encoder.backends.openvino_graph import (
    additive_key_mask,
    attention_scale_in_queries,
    bf16_residual_stream,
    gather_before_dequantizing,
    int8_vocabulary_graph,
)
from baihua.encoder.batching import pad


def compiled(folder: Path, rewritten: bool, fused_attention: bool) -> Any:
    """The backend's bf16 graph, with or without the attention rewrites, on one thread."""
    import openvino as ov

    meta = read_meta(folder)
    assert meta is not None
    model, _ = int8_vocabulary_graph(folder, meta["model_file"])
    if rewritten:
        attention_scale_in_queries(model)
        additive_key_mask(model)
    bf16_residual_stream(model)
    gather_before_dequantizing(model)
    config = {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": 1,
              "PERFORMANCE_HINT": "LATENCY"}  # fmt: skip
    if not fused_attention:
        config["SNIPPETS_MODE"] = "DISABLE"
    return ov.Core().compile_model(model, "CPU", config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="senteval_cn folder")
    parser.add_argument("--calls", type=int, default=30, help="calls of each, per set")
    args = parser.parse_args()

    encoder = Encoder("me5-small", backend="openvino", dtype="bfloat16")
    folder: Path = encoder.runner.folder  # type: ignore[attr-defined]
    sentences = sorted(sts_sentences(args.data_dir, 1000), key=len)
    sets = [("32 sentences", sentences[484:516], "query", 64)]
    for length in (128, 256, 512):
        texts = passages(args.data_dir, encoder.tokenizer, encoder.prefix("passage"), length,
                         MAX_BATCH_TOKENS // length)  # fmt: skip
        sets.append((f"{len(texts)} passages of {length} tokens", texts, "passage", length))
    print("| batch | off ms | on ms | off / on, median (quartiles) | min cosine |")
    print("|---|---|---|---|---|")
    for name, texts, text_type, max_length in sets:
        fused = max_length > 64
        models = {"off": compiled(folder, False, fused), "on": compiled(folder, True, fused)}
        requests = {key: model.create_infer_request() for key, model in models.items()}
        ids, _ = encoder.tokenizer.encode(
            [encoder.prefix(text_type) + t for t in texts], max_length
        )
        input_ids, mask = pad(ids, encoder.tokenizer.pad_id)
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        pooled = {}
        for key, request in requests.items():
            states = request.infer(feeds)[models[key].output("last_hidden_state")]
            pooled[key] = (states * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        times: dict[str, list[float]] = {"off": [], "on": []}
        for call in range(args.calls):
            for key in ("off", "on") if call % 2 == 0 else ("on", "off"):
                start = time.perf_counter()
                requests[key].infer(feeds)
                times[key].append(time.perf_counter() - start)
        ratios = np.array(times["off"]) / np.array(times["on"])
        low, middle, high = np.percentile(ratios, [25, 50, 75])
        off, on = (statistics.median(times[key]) * 1e3 for key in ("off", "on"))
        print(f"| {name} | {off:.1f} | {on:.1f} | {middle:.3f} ({low:.3f}–{high:.3f}) | "
              f"{cosines(pooled['off'], pooled['on']).min():.6f} |")  # fmt: skip


if __name__ == "__main__":
    main()
