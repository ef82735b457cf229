"""`baihua fit` on the same sentences with `--engine local` and `--engine ray` (a local Ray):
wall time of each and how far apart the two fitted whitenings are.

    nice -n 10 .venv/bin/python bench/fit_engines.py \
        --corpus ../shared/data/senteval_cn/LCQMC/LCQMC.test.data --sentences 20000

The first `--sentences` sentences of the corpus (TSV pairs give two a line) are fitted with the
default model; the local job uses `--threads` torch threads, Ray `--actors` actors of
`--threads // --actors` threads each, so both use the same cores. Prints the time ratio and the
largest relative differences of the moments, the mean and K Kᵀ (the whitening metric), and the
largest absolute difference of the whitening kernel itself.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from baihua.encoder.corpus import iter_corpus
from baihua.jobs.fit import FitJob
from baihua.jobs.ray import RayOptions, ray_fit
from baihua.serving.components import build_encoder
from baihua.serving.settings import load_settings


def relative(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--sentences", type=int, default=20_000)
    parser.add_argument("--model", default="me5-small")
    parser.add_argument("--backend", default=None, help="encoder backend (default: the service's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--actors", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        sentences = itertools.islice(iter_corpus(args.corpus), args.sentences)
        corpus.write_text("".join(s.replace("\n", " ") + "\n" for s in sentences))
        total = sum(1 for _ in iter_corpus(corpus))

        settings = load_settings(model=args.model, backend=args.backend, num_threads=args.threads)
        start = time.perf_counter()
        local = FitJob(corpus, Path(tmp) / "local", build_encoder(settings)).run()
        local_s = time.perf_counter() - start

        options = RayOptions(
            num_cpus=args.threads, actors=args.actors, threads_per_actor=args.threads // args.actors
        )
        job = FitJob(corpus, Path(tmp) / "ray", build_encoder(settings))
        job.plan(total)
        start = time.perf_counter()
        ray = ray_fit(job, settings, total, options, progress=None)
        ray_s = time.perf_counter() - start

    metric = {name: t.components_ @ t.components_.T for name, t in (("ray", ray), ("local", local))}
    print(
        f"sentences: {total}, model {args.model}, backend {settings.backend}, "
        f"{args.threads} threads / {args.actors} actors"
    )
    print(f"local: {local_s:.1f} s, ray: {ray_s:.1f} s, ray/local: {ray_s / local_s:.2f}")
    print(f"moments Σx: {relative(ray.moments_.sum, local.moments_.sum):.2e} relative")
    print(
        f"moments Σxxᵀ: {relative(ray.moments_.sum_outer, local.moments_.sum_outer):.2e} relative"
    )
    print(f"mean: {relative(ray.mean_, local.mean_):.2e} relative")
    print(f"K Kᵀ: {relative(metric['ray'], metric['local']):.2e} relative")
    print(f"kernel K: {np.abs(ray.components_ - local.components_).max():.2e} max absolute")


if __name__ == "__main__":
    main()
