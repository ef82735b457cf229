"""The crash-loop soak in its short form: at least 20 SIGKILLs of a real `baihua serve` on FAISS
and 8 on the embedded Milvus engine while one client writes, the invariants of
tests/crash_soak.py (stored vectors included) checked after every restart. The long form is
bench/crash_soak.py."""

from __future__ import annotations

from pathlib import Path

from tests.crash_soak import soak


def test_nothing_acknowledged_is_lost_over_20_kills_on_faiss(
    tiny_bert: Path, tmp_path: Path
) -> None:
    report = soak(tiny_bert, tmp_path, kills=20, engine="faiss", seed=26, log=print)
    print(report.line("faiss"))
    assert not report.failures, "\n".join(report.failures)
    assert report.kills >= 20
    assert report.acknowledged > 100 and report.checked_vectors > 0


def test_nothing_acknowledged_is_lost_over_8_kills_on_milvus(
    tiny_bert: Path, tmp_path: Path
) -> None:
    report = soak(tiny_bert, tmp_path, kills=8, engine="milvus", seed=26, log=print)
    print(report.line("milvus"))
    assert not report.failures, "\n".join(report.failures)
    assert report.kills >= 8
    assert report.acknowledged > 30 and report.checked_vectors > 0
