"""A re-embedding soak: `baihua index reembed` killed with SIGKILL at random moments and just
before each step of its switch, rerun until it finishes, with a real `baihua serve` writing to
whichever index is in place between the runs (as an operator would restart the old server after
a crash). After every kill the server opens what is on disk and the invariants of
tests/crash_soak.py hold:
every acknowledged document present once, nothing deleted back, count = scan = index size,
and every stored vector equal to re-encoding its text in the one space the index records.
When the last run has switched: the index is in the new space, and no id the old index handed
out (deleted ones included) is handed out again.

Kills come three ways: at a chosen file-system step of the switch (tests/kill_at_step.py: the
process kills itself just before the step), at a random step of the whole run, and from
outside after a random delay. A finished re-embedding is followed by one back to the first
space, so the switches also meet an `index.previous` to replace.

Used by tests/cli/test_reembed_kills.py (short) and bench/crash_soak.py --reembed (long).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from baihua.encoder import EmbeddingPipeline
from baihua.index.database import read_meta
from tests.crash_soak import Checker, Client, Expected, Report, sqlite_vectors
from tests.serve_process import ROOT, ServeProcess, run_baihua, tiny_env

KILL_AT_STEP = ROOT / "tests" / "kill_at_step.py"
# the switch's steps, counted from the switching record, the first progress write after the
# old index's lock is taken: record, exchange (renameat2), old index to index.previous (its
# removal first), progress gone
SWITCH_STARTS = r"open\t.*/index/lock$>>reembed-progress\.tmp"
SWITCH_STEPS = 7


@dataclass
class Space:
    name: str
    model: Path
    pipeline: EmbeddingPipeline

    @property
    def weights(self) -> str:
        return str(self.pipeline.spec.to_dict()["weights"])


@dataclass
class Outcome:
    """How the reembed runs ended, and where the kills left the data folder."""

    runs: int = 0
    finished: int = 0
    kills: Counter[str] = field(default_factory=Counter)  # how: switch step, any step, timer
    states: Counter[str] = field(default_factory=Counter)  # the folder after a kill
    server_writes: int = 0  # servers that wrote between two runs

    def line(self) -> str:
        return (
            f"reembed: {sum(self.kills.values())} kills ({dict(self.kills)}), left in "
            f"{dict(self.states)}; {self.runs} runs, {self.finished} switches finished; "
            f"{self.server_writes} servers wrote between runs"
        )


def disk_state(data: Path) -> str:
    """Where a re-embedding stands on disk: not begun, encoding, switching (old index still
    in place or already moved), or done."""
    progress = data / "reembed-progress.json"
    if not progress.is_file():
        return "done-or-not-begun" if not (data / "index.reembed").exists() else "leftover"
    record = json.loads(progress.read_text())
    if record["state"] != "switching":
        return "encoding"
    index = data / "index" / "documents.sqlite"
    if not index.is_file():
        return "switching:index-missing"
    moved = read_meta(index)["store_id"] == record.get("new_store")
    return "switching:exchanged" if moved else "switching:old-in-place"


def space_of_index(data: Path, spaces: list[Space]) -> Space:
    weights = json.loads(read_meta(data / "index" / "documents.sqlite")["spec"])["weights"]
    return next(s for s in spaces if s.weights == weights)


def serve_and_write(
    space: Space, data: Path, log: Path, expected: Expected, rng: random.Random, report: Report
) -> None:
    """Open the index with a server in its space, check it, write for a moment, then stop the
    server gracefully or kill it."""
    server = ServeProcess(space.model, data, log).start()
    try:
        vectors = sqlite_vectors(data / "index" / "documents.sqlite")
        Checker(space.pipeline, report).check(server.url, expected, vectors)
        client = Client(server.url, expected, rng, report)
        stop = threading.Event()
        writer = threading.Thread(target=client.run_until_gone, args=(stop,))
        writer.start()
        time.sleep(rng.uniform(0.3, 1.5))
        graceful = rng.random() < 0.5
        if graceful:
            stop.set()
            writer.join(timeout=60)
            server.stop()
        else:
            server.kill()
            stop.set()
            writer.join(timeout=60)
        client.close()
    finally:
        server.kill()


def reembed(
    data: Path, space: Space, log: Path, *, kill_at: int = 0, start: str = "", after: float = 0
) -> subprocess.CompletedProcess[str]:
    """`baihua index reembed` into ``space``, killed just before its ``kill_at``-th step from
    the first matching ``start`` (tests/kill_at_step.py), or ``after`` seconds (0: never)."""
    command = [sys.executable, str(KILL_AT_STEP), str(kill_at), start, str(log), str(data)]
    command += ["index", "reembed", "--data-dir", str(data), "--model", str(space.model)]
    process = subprocess.Popen(
        command, env=tiny_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    if after:
        try:
            process.wait(timeout=after)
        except subprocess.TimeoutExpired:
            process.kill()
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def finished(result: subprocess.CompletedProcess[str]) -> bool:
    """A run that switched, or found the switch done by the run it followed."""
    if result.returncode == 0:
        return True
    return result.returncode == 1 and "already in this space" in result.stderr


def soak_reembed(
    spaces: list[Space],
    work: Path,
    *,
    step_kills: int,
    timed_kills: int,
    seed: int = 26,
    log: Callable[[str], None] = lambda line: None,
) -> tuple[Outcome, Report]:
    """Kill runs of `baihua index reembed` (every step of the switch, ``step_kills`` at a
    random step, ``timed_kills`` after a random delay, in random order), then let one finish;
    the invariants are checked whenever a server opens the folder."""
    rng = random.Random(seed)
    report, expected, outcome = Report(), Expected(), Outcome()
    data, logs = work / "data", work / "logs"
    logs.mkdir(parents=True)
    corpus = work / "corpus.jsonl"
    rows = [
        {"id": i, "text": f"hello 的 {i} world", "payload": {"group": i % 12, "v": 0}}
        for i in range(1300)  # two chunks of 1024
    ]
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    built = run_baihua(
        "index", "build", "--input", str(corpus), "--data-dir", str(data),
        "--model", str(spaces[0].model), env=tiny_env(),
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    for row in rows:
        expected.settle(row["id"], (row["text"], row["payload"]))
    expected.next_id = len(rows)

    plan = [("switch", k) for k in range(1, SWITCH_STEPS + 1)]
    plan += [("step", 0)] * step_kills + [("timer", 0)] * timed_kills
    rng.shuffle(plan)
    target = spaces[1]
    state = "not begun"
    for number, (how, k) in enumerate(plan):
        # the dangerous moment for a server to write: the switch was announced but the old
        # index is still in place, so the rerun must catch up on it again
        if state == "switching:old-in-place" or (
            (data / "index" / "documents.sqlite").is_file() and rng.random() < 0.3
        ):
            serving = space_of_index(data, spaces)
            serve_log = logs / f"serve-{number}.log"
            serve_and_write(serving, data, serve_log, expected, rng, report)
            outcome.server_writes += 1
            if report.failures:
                return outcome, report
        steps = logs / f"steps-{number}.log"
        if how == "switch":
            result = reembed(data, target, steps, kill_at=k, start=SWITCH_STARTS)
        elif how == "step":
            result = reembed(data, target, steps, kill_at=rng.randint(1, 24))
        else:
            result = reembed(data, target, steps, after=rng.uniform(1.0, 6.0))
        outcome.runs += 1
        if result.returncode == -9:
            outcome.kills[how] += 1
            report.kills += 1
            state = disk_state(data)
            outcome.states[state] += 1
            log(f"kill {report.kills} ({how} {k}) towards {target.name}: {state}")
        elif finished(result):
            outcome.finished += 1
            state = "done"
            log(f"run {number} ({how} {k}) finished the switch to {target.name}")
            target = spaces[0] if target is spaces[1] else spaces[1]  # and back again
        else:
            report.failures.append(f"reembed run {number} ({how} {k}): {result.stderr[-2000:]}")
            return outcome, report

    result = reembed(data, target, logs / "steps-last.log")  # to the end, without a kill
    outcome.runs += 1
    assert finished(result), result.stderr
    outcome.finished += result.returncode == 0
    final = space_of_index(data, spaces)
    assert final is target
    server = ServeProcess(final.model, data, logs / "serve-final.log").start()
    try:
        vectors = sqlite_vectors(data / "index" / "documents.sqlite")
        Checker(final.pipeline, report).check(server.url, expected, vectors)
        old = read_meta(data / "index.previous" / "documents.sqlite")
        new_id = httpx.post(
            f"{server.url}/documents", json={"documents": [{"text": "a new one"}]}
        ).json()["ids"][0]
        if new_id < int(old["next_id"]):
            report.failures.append(
                f"id {new_id} handed out after the switch; the old index had handed out every "
                f"id below {old['next_id']}"
            )
    finally:
        server.kill()
    return outcome, report
