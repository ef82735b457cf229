"""`baihua index reembed` killed with SIGKILL just before each step of its switch, at random
steps and at random moments, rerun until it finishes, with servers writing in between; the
invariants of tests/reembed_soak.py checked whenever a server opens the folder. The long form
is `bench/crash_soak.py --reembed`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import build_tiny_bert
from tests.crash_soak import tiny_pipeline
from tests.reembed_soak import SWITCH_STEPS, Space, soak_reembed


@pytest.fixture(scope="module")
def other_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("other-bert"), seed=1)


def test_a_reembed_killed_anywhere_loses_nothing_and_ends_in_one_space(
    tiny_bert: Path, other_bert: Path, tmp_path: Path
) -> None:
    spaces = [
        Space("a", tiny_bert, tiny_pipeline(tiny_bert)),
        Space("b", other_bert, tiny_pipeline(other_bert)),
    ]
    outcome, report = soak_reembed(spaces, tmp_path, step_kills=1, timed_kills=1, log=print)
    print(outcome.line())
    print(report.line("faiss (reembed)"))
    assert not report.failures, "\n".join(report.failures)
    assert outcome.kills["switch"] >= SWITCH_STEPS // 2  # a resumed switch has fewer steps
    assert outcome.states["switching:old-in-place"] and outcome.states["switching:exchanged"]
    assert report.checked_vectors > 0
