"""The crash-loop soak, long form: N SIGKILLs of a real `baihua serve` while one client writes a
random mix of add, upsert, delete, delete-by-filter and payload patch; the invariants of
tests/crash_soak.py (nothing acknowledged lost, no phantom, no duplicate, count = scan = index
size, vectors = re-encoding, recall@10 = exact) checked after every restart.

    nice -n 10 .venv/bin/python bench/crash_soak.py --kills 200 --engine faiss

With --reembed, `baihua index reembed` is the process killed instead (tests/reembed_soak.py): just
before each step of its switch, then --kills more times at random steps and moments, rerun until
it finishes, with servers writing between the runs.

Serves the tiny random BERT of tests/conftest.py (the invariants do not depend on the model,
and restarts stay short); prints one line per kill and the report.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' harness

from tests.conftest import build_tiny_bert  # noqa: E402
from tests.crash_soak import soak, tiny_pipeline  # noqa: E402
from tests.reembed_soak import Space, soak_reembed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--engine", choices=["faiss", "milvus"], default="faiss")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="Folder for the data and logs (default: temp).")
    parser.add_argument("--reembed", action="store_true", help="Kill `baihua index reembed`.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        model = build_tiny_bert(work / "tiny-bert")
        if args.reembed:
            reembed_main(model, work, args.kills, args.seed)
            return
        report = soak(
            model, work / "soak", kills=args.kills, engine=args.engine, seed=args.seed, log=print
        )
    print(report.line(args.engine))
    for failure in report.failures:
        print("FAILURE", failure)
    sys.exit(1 if report.failures else 0)


def reembed_main(model: Path, work: Path, kills: int, seed: int) -> None:
    other = build_tiny_bert(work / "other-bert", seed=1)
    spaces = [Space("a", model, tiny_pipeline(model)), Space("b", other, tiny_pipeline(other))]
    outcome, report = soak_reembed(
        spaces,
        work / "reembed",
        step_kills=kills // 2,
        timed_kills=kills - kills // 2,
        seed=seed,
        log=print,
    )
    print(outcome.line())
    print(report.line("faiss (reembed)"))
    for failure in report.failures:
        print("FAILURE", failure)
    sys.exit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
