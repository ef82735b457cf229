"""The crash-loop soak, long form: N SIGKILLs of a real `baihua serve` while one client writes a
random mix of add, upsert, delete, delete-by-filter and payload patch; the invariants of
tests/crash_soak.py (nothing acknowledged lost, no phantom, no duplicate, count = scan = index
size, vectors = re-encoding, recall@10 = exact) checked after every restart.

    nice -n 10 .venv/bin/python bench/crash_soak.py --kills 200 --engine faiss

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
from tests.crash_soak import soak  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--engine", choices=["faiss", "milvus"], default="faiss")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="Folder for the data and logs (default: temp).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        model = build_tiny_bert(work / "tiny-bert")
        report = soak(
            model, work / "soak", kills=args.kills, engine=args.engine, seed=args.seed, log=print
        )
    print(report.line(args.engine))
    for failure in report.failures:
        print("FAILURE", failure)
    sys.exit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
