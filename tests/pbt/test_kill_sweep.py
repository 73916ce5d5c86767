"""`kubetune run` SIGKILLed at several moments around PBT exploits, and run again with the
same command each time: exactly one replacement per exploit decision, deterministic
names, consistent lineage, and decisions that a replay of the history makes again.

Moments (each at the next exploit after the previous restart; the sweep goes round twice,
in a fresh experiment when a run ends before its moment):
  decided   the TrialExploited record was just written (the replacement has no process);
  ended     the replaced member's process ended (the replacement may start now);
  launched  the replacement's first attempt was just launched (its process is starting);
  reported  the replacement just reported for the first time (it trains).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.engine import Engine
from kubetune.events import Reported, TrialExploited, from_record
from kubetune.spec import parse_experiment
from tests.pbt.test_local import KUBETUNE, checkpoint, experiment, run

pytestmark = pytest.mark.slow

Records = list[dict[str, Any]]


def read_events(path: Path) -> Records:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def decided(records: Records, seen: int) -> int | None:
    """The replacement of the first exploit after the first `seen` ones."""
    exploits = [r for r in records if r["type"] == "TrialExploited"]
    return exploits[seen]["number"] if len(exploits) > seen else None


def ended(records: Records, seen: int) -> int | None:
    """The replaced member's process has ended (its replacement may start now)."""
    exploits = [r for r in records if r["type"] == "TrialExploited"]
    if len(exploits) <= seen:
        return None
    replaces = exploits[seen]["replaces"]
    after = records[records.index(exploits[seen]) :]
    hit = any(r["type"] == "AttemptEnded" and r["number"] == replaces for r in after)
    return exploits[seen]["number"] if hit else None


def launched(records: Records, seen: int) -> int | None:
    number = decided(records, seen)
    hit = any(r["type"] == "TrialLaunched" and r["number"] == number for r in records)
    return number if number is not None and hit else None


def reported(records: Records, seen: int) -> int | None:
    number = decided(records, seen)
    hit = any(r["type"] == "Reported" and r["number"] == number for r in records)
    return number if number is not None and hit else None


MOMENTS: list[tuple[str, Callable[[Records, int], int | None]]] = [
    ("decided", decided),
    ("ended", ended),
    ("launched", launched),
    ("reported", reported),
]


def kill_at(path: Path, log: Path, moment: Callable[[Records, int], int | None]) -> int | None:
    """Run until `moment` holds for an exploit not seen yet, then SIGKILL kubetune.
    Returns the replacement's number (None: the run ended first)."""
    seen = sum(r["type"] == "TrialExploited" for r in read_events(log))
    proc = subprocess.Popen(
        [*KUBETUNE, "run", str(path), "--no-live"],
        cwd=path.parent,
        env=os.environ | {"DECAY_STEP_SECONDS": "0.08"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            number = moment(read_events(log), seen)
            if number is not None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                return number
            time.sleep(0.005)
        return None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def replayed_decisions(spec_document: dict[str, Any], records: Records) -> None:
    """Each TrialExploited is what the scheduler decides again from the history before
    the report that led to it (same seed, trial and step: same draws)."""
    spec = parse_experiment(spec_document).spec
    events = [from_record(r) for r in records]
    for index, event in enumerate(events):
        if not isinstance(event, TrialExploited):
            continue
        report = events[index - 2]
        assert isinstance(report, Reported) and report.number == event.replaces
        engine = Engine.replay(spec, "pbt", events[: index - 2])
        value = report.metrics["loss"]
        again = engine.scheduler.exploit(  # type: ignore[attr-defined]
            engine.trials[report.number], report.step, value, engine.trials
        )
        assert again is not None, f"the replay would not replace {event.replaces}"
        assert (again.donor, again.from_step, again.params) == (
            event.parent,
            event.from_step,
            dict(event.params),
        )


def test_kill_9_around_exploits_makes_exactly_one_replacement_each(tmp_path: Path) -> None:
    # Each kill uses up the exploits made before it lands, more on a loaded machine (a
    # `reported` kill took 1 to 3 under two busy loops), and a run makes about 10: when a run
    # ends before its moment, the sweep goes on in a fresh experiment, each one checked whole.
    pending = MOMENTS * 2
    killed: list[tuple[str, int]] = []
    for attempt in range(3):
        if len(killed) >= len(MOMENTS):  # each moment hit once: the second round is a bonus
            break
        workdir = tmp_path / f"sweep-{attempt}"
        workdir.mkdir()
        path, log, document = write_experiment(workdir)
        killed_here: list[tuple[str, int]] = []
        while pending:
            name, moment = pending[0]
            number = kill_at(path, log, moment)
            if number is None:
                break
            killed_here.append((name, number))
            pending.pop(0)
        finish_and_check(path, log, document, killed_here)
        killed += killed_here
    assert [name for name, _ in killed][:4] == [name for name, _ in MOMENTS], killed


def write_experiment(workdir: Path) -> tuple[Path, Path, dict[str, Any]]:
    path = workdir / "pbt.yaml"
    document = experiment("pbt", workdir / "ckpt")
    document["spec"]["scheduler"]["maxResource"] = 32
    path.write_text(yaml.safe_dump(document))
    return path, workdir / ".kubetune" / "pbt" / "events.jsonl", document


def finish_and_check(
    path: Path, log: Path, document: dict[str, Any], killed: list[tuple[str, int]]
) -> None:
    """Run the experiment to its end with the same command, then check every exploit made
    across the kills: one replacement each, its lineage, and its replay."""
    root = path.parent / "ckpt"
    out = path.parent / "results.json"
    done = run(path, "--output", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())
    assert results["reason"] == "PopulationTrained"

    records = read_events(log)
    exploits = [r for r in records if r["type"] == "TrialExploited"]
    trials = {t["name"]: t for t in results["trials"]}
    # Exactly one replacement per decision: every trial past the population is one
    # decision's, named by its number, and no member is replaced twice.
    assert sorted(trials) == sorted(f"pbt-{n}" for n in range(4 + len(exploits)))
    assert [e["number"] for e in exploits] == list(range(4, 4 + len(exploits)))
    assert len({e["replaces"] for e in exploits}) == len(exploits)
    for event in exploits:
        child = trials[f"pbt-{event['number']}"]
        parent = f"pbt-{event['parent']}"
        assert (child["parent"], child["fromStep"]) == (parent, event["from_step"])
        assert trials[f"pbt-{event['replaces']}"]["replacedBy"] == child["name"]
        assert child["generation"] == trials[parent]["generation"] + 1
        # Started once from the parent's checkpoint at the pinned step, whatever the
        # kills: its first own checkpoint's lineage ends there.
        donor = checkpoint(root, parent, event["from_step"])
        assert donor["saved_by"] == parent and donor["step"] == event["from_step"]
        first_own = event["from_step"] + 2
        if (root / "pbt" / child["name"] / f"step-{first_own:08d}.ckpt").exists():
            own = checkpoint(root, child["name"], first_own)
            assert own["loaded"][-1] == [parent, event["from_step"]]
    # A replacement killed with kubetune was interrupted, not replaced again: it resumed.
    for name, number in killed:
        if name in ("launched", "reported"):
            child = trials[f"pbt-{number}"]
            assert child["attempts"] >= 2 and child["interruptions"] >= 1, (name, child)
    replayed_decisions(document, records)
