"""Holes in stored histories (operator/gaps.py): what a killed operator never wrote is
not told as deleted, at this load or any later one; what was durable and is gone is.
Several cases are the findings of an attack on the first version (stop 20's session)."""

from __future__ import annotations

import asyncio
import random
import time
from types import SimpleNamespace
from typing import Any

from kubetune.events import Event, Reported, TrialLaunched
from kubetune.operator import gaps, store
from kubetune.operator.gaps import Holes, Watermark
from kubetune.operator.history import HistoryRecords
from kubetune.operator.writes import StatusWriter
from kubetune.trials import Decision, Verdict
from tests.operator.test_write_economy import fake_engine, fake_experiment

Owner = int | None


class Operator:
    """Makes records as HistoryRecords does and keeps what its writes made durable;
    `kill` loses everything else."""

    def __init__(
        self, stored: dict[Owner, list[dict[str, Any]]], holes: list[tuple[int, int]]
    ) -> None:
        self.stored = stored
        self.made: dict[Owner, list[dict[str, Any]]] = {k: list(v) for k, v in stored.items()}
        self.watermark = Watermark()
        self.watermark.carry(holes)
        self.next_seq = 1 + max((r["seq"] for h in stored.values() for r in h), default=-1)

    def make(self, owner: Owner, step: int = 1, report: bool = False) -> int:
        """A record of `owner`: a report at `step`, or (so that no two attempts' report
        spans hide each other's holes, which `find_holes` leaves to compaction) a launch."""
        seq = self.next_seq
        self.next_seq += 1
        number = owner or 0
        event: Event = (
            Reported(number, 1, step, {"loss": 1.0}, Verdict(Decision.CONTINUE), None, 0.0)
            if report
            else TrialLaunched(number, step, False, 27, 0.0)
        )
        record = {**store.encode(seq, event), **self.watermark.stamp(seq, owner)}
        self.made.setdefault(owner, []).append(record)
        return seq

    def write(self, owner: Owner) -> None:
        snapshot = list(self.made[owner])
        self.stored[owner] = snapshot
        self.watermark.written(owner, snapshot)

    def histories(self) -> list[list[dict[str, Any]]]:
        return list(self.stored.values())


def restart(stored: dict[Owner, list[dict[str, Any]]]) -> tuple[Holes, Operator]:
    holes = gaps.find_holes(list(stored.values()))
    return holes, Operator(stored, holes.to_carry())


def run(*numbers: int) -> list[tuple[int, int]]:
    return [(n, n) for n in numbers]


def nothing(holes: Holes) -> bool:
    return not holes.missing and not holes.lost


def test_records_a_killed_operator_never_wrote_are_not_missing_now_or_after_restarts() -> None:
    op = Operator({}, [])
    op.make(0)
    op.write(0)
    late = op.make(0, 2)  # a late report of trial 0, answered, not yet written
    op.make(1)
    op.make(1, 2)
    op.write(1)  # trial 1 is durable past trial 0's late report: then the SIGKILL
    holes, op = restart(op.stored)
    assert (holes.missing, holes.lost) == ([], run(late))
    # The restarted operator carries the hole on what it makes next; once that is durable
    # and more is written after it, no later load finds the hole again.
    op.make(0, 3)
    op.write(0)
    op.make(1, 3)
    op.write(1)
    holes, op = restart(op.stored)
    assert nothing(holes)
    for _ in range(3):  # three kills in a row, each losing a late report
        op.make(1, 4)
        op.write(1)
        op.make(0, 5)
        op.make(1, 6)
        op.write(1)
        holes, op = restart(op.stored)
        assert holes.missing == [], holes
    op.make(0, 7)
    op.write(0)
    assert nothing(gaps.find_holes(op.histories()))


def test_each_owner_carries_the_holes_so_one_lost_carrier_loses_nothing() -> None:
    op = Operator({}, [])
    op.make(0)
    op.write(0)
    lost = op.make(0, 2)
    op.make(1)
    op.write(1)
    holes, op = restart(op.stored)
    assert holes.lost == run(lost)
    # Killed again: trial 0's carrier was not written, trial 1's was.
    carrier = op.make(0, 3)
    op.make(1, 2)
    op.make(1, 3)
    op.write(1)
    records = op.stored[1][-2:]
    assert [r.get(gaps.LOST_FIELD) for r in records] == [[[lost, lost]], None]
    holes, op = restart(op.stored)
    assert (holes.missing, holes.lost) == ([], run(carrier))


def test_an_earlier_loads_carrier_written_again_does_not_settle_this_loads_holes() -> None:
    """A write of an owner that made nothing since the load (the experiment's status at
    every load) holds only older carriers: this load's holes must still be carried."""
    op = Operator({}, [])
    op.make(None)
    op.write(None)
    op.make(0)
    op.write(0)
    op.make(0, 2)  # lost at the first kill
    op.make(1)
    op.write(1)
    _, op = restart(op.stored)
    op.make(None, 2)
    op.write(None)  # the experiment's carrier of load 1
    op.make(1, 2)
    op.write(1)
    second = op.make(0, 3)  # lost at the second kill
    op.make(1, 3)
    op.write(1)
    holes, op = restart(op.stored)
    assert holes.lost == run(second)
    op.write(None)  # written again, nothing new in it
    op.make(1, 4)
    op.write(1)
    assert op.stored[1][-1].get(gaps.LOST_FIELD), "trial 1's next record carries load 2's hole"
    op.make(0, 5)  # killed again
    holes, _ = restart(op.stored)
    assert holes.missing == [], holes


def test_random_operator_lives_without_deletions_never_tell_a_record_missing() -> None:
    """Random interleavings of records made by five owners, writes, compaction and kills
    (the attack's fuzz found the earlier-carrier bug within 10 seeds)."""
    for seed in range(400):
        rng = random.Random(seed)
        op = Operator({}, [])
        steps: dict[Owner, int] = {}
        for _ in range(rng.randint(5, 120)):
            owner = rng.choice([None, 1, 2, 3, 4])
            roll = rng.random()
            if roll < 0.5:
                steps[owner] = steps.get(owner, 0) + 1
                op.make(owner, steps[owner], report=owner is not None and rng.random() < 0.5)
            elif roll < 0.9 and owner in op.made:
                if owner is not None and rng.random() < 0.3:
                    op.made[owner] = store.compact(
                        op.made[owner], lambda step: False, limit=rng.randint(2, 6)
                    )
                op.write(owner)
            elif roll >= 0.9:
                holes, op = restart(op.stored)
                assert holes.missing == [], (seed, holes)


def test_a_durable_record_deleted_is_missing_and_told_once() -> None:
    op = Operator({}, [])
    for step in range(1, 4):
        op.make(0, step)
        op.make(1, step)
        op.write(0)
        op.write(1)
    deleted = op.stored[1].pop(1)["seq"]  # someone removes trial 1's step-2 record
    other = op.stored[0].pop(0)["seq"]  # and trial 0's first
    holes, op = restart(op.stored)
    assert (holes.missing, holes.lost) == (run(*sorted([deleted, other])), [])
    assert gaps.describe(holes.missing) == f"{other}, {deleted}"
    op.make(0, 4)
    op.write(0)
    holes, _ = restart(op.stored)
    assert nothing(holes), "told at the load that found it, not again"


def test_records_without_a_watermark_tell_nothing_and_refused_ones_are_not_believed() -> None:
    older = [store.encode(seq, TrialLaunched(seq, 1, False, 27, 0.0)) for seq in (0, 2, 4)]
    assert (gaps.find_holes([older]).missing, gaps.find_holes([older]).lost) == ([], run(1, 3))
    forged = {**store.encode(3, TrialLaunched(7, 1, False, 27, 0.0)), "durable": 10**9}
    assert gaps.find_holes([older], refused=[forged]).lost == run(1)
    # A refused record's number bounds nothing: the holes end at the highest signed one.
    far = {**store.encode(10**15, TrialLaunched(8, 1, False, 27, 0.0)), "durable": 10**15}
    assert gaps.find_holes([older], refused=[far]).lost == run(1, 3)


def test_a_huge_number_in_a_history_costs_no_more_than_a_small_one() -> None:
    """Legacy histories are signed as they stand: a forged number is believed, and holes
    are runs, never enumerated (the first version looped up to it)."""
    records = [store.encode(seq, TrialLaunched(0, 1, False, 27, 0.0)) for seq in (0, 10**15)]
    started = time.monotonic()
    holes = gaps.find_holes([records])
    assert holes.lost == [(1, 10**15 - 1)] and gaps.count(holes.lost) == 10**15 - 1
    assert time.monotonic() - started < 1.0


def test_compaction_keeps_the_last_carrier_and_carriers_stay_within_the_limit() -> None:
    op = Operator({}, [])
    op.make(0, 0, report=True)
    op.write(0)
    step = 1
    for _ in range(600):  # a crash loop: each kill loses one late report of trial 1
        op.make(0, step, report=True)  # trial 0's next report carries the holes
        step += 1
        op.made[0] = store.compact(op.made[0], lambda s: False, limit=50)
        op.write(0)
        op.make(1, step, report=True)
        op.make(2)
        op.write(2)
        holes, op = restart(op.stored)
        assert holes.missing == []
    kept = op.stored[0]
    carriers = [r for r in kept if gaps.LOST_FIELD in r]
    # Older carriers are thinned like any report (the last holds what they do).
    assert len(kept) <= 50, len(kept)
    assert carriers[-1] is kept[-1]


def test_more_lost_runs_than_a_record_carries_are_coarsened_not_dropped() -> None:
    """300 trials each losing a late report between others' writes: 300 runs, more than
    MAX_LOST_RUNS; dropping some made the next load tell them missing."""
    op = Operator({}, [])
    trials = 300
    for number in range(trials):
        op.make(number)
        op.write(number)
    for number in range(trials):
        op.make(number, 2, report=True)  # late, lost at the kill
        op.make(trials + number)
        op.write(trials + number)
    holes, op = restart(op.stored)
    assert len(holes.lost) == trials and holes.missing == []
    carried = holes.to_carry()
    assert len(carried) == gaps.MAX_LOST_RUNS
    assert gaps.count(carried) >= trials
    op.make(0, 3, report=True)
    op.write(0)
    holes, _ = restart(op.stored)
    assert holes.missing == [], holes.missing[:5]


def test_only_what_a_write_sent_becomes_durable() -> None:
    """A record added while a trial's status write is in flight was not in it (the first
    version marked the live list written, raising the watermark over an unwritten
    report): StatusWriter._write_trial and HistoryRecords, against a fake API."""
    stored: dict[str, list[dict[str, Any]]] = {}
    engine = fake_engine(2)
    in_flight = asyncio.Event()

    async def patch_trial_status(namespace: str, name: str, patch: dict[str, Any]) -> str:
        if name == "t0" and not in_flight.is_set():
            in_flight.set()
            await asyncio.sleep(0.01)
        stored[name] = patch["history"]
        return "1"

    experiment = fake_experiment(engine, SimpleNamespace(patch_trial_status=patch_trial_status))

    def report(number: int, step: int) -> Reported:
        return Reported(number, 1, step, {"loss": 1.0}, Verdict(Decision.CONTINUE), None, 0.0)

    async def scenario() -> None:
        history = HistoryRecords(experiment)  # type: ignore[arg-type]
        writer = StatusWriter(experiment, history)  # type: ignore[arg-type]
        writer.trial_uids = {0: "u0", 1: "u1"}
        writer.trial_status = lambda trial, records: {"history": records}  # type: ignore[method-assign]
        engine.history += [TrialLaunched(0, 1, False, 27, 0.0), TrialLaunched(1, 1, False, 27, 0.0)]
        writer.note_new_events()
        await writer.flush_trial(1)
        write = asyncio.create_task(writer.flush_trial(0))
        await in_flight.wait()
        engine.history.append(report(0, 2))  # during trial 0's write
        writer.note_late_report()
        await write
        assert writer.report_flush is not None
        writer.report_flush.cancel()
        engine.history.append(report(1, 2))
        writer.note_new_events()
        await writer.flush_trial(1)  # then the SIGKILL

    asyncio.run(scenario())
    assert [r["seq"] for r in stored["t0"]] == [0]
    holes = gaps.find_holes(list(stored.values()))
    assert (holes.missing, holes.lost) == ([], run(2))


def test_a_mass_deletion_carries_at_most_a_bounded_list() -> None:
    watermark = Watermark()
    holes = Holes([(n, n) for n in range(0, 4 * gaps.MAX_LOST_RUNS, 2)], [], [])
    watermark.carry(holes.to_carry())
    stamp = watermark.stamp(10**6, 0)
    assert len(stamp[gaps.LOST_FIELD]) == gaps.MAX_LOST_RUNS


def test_a_status_nested_too_deep_is_someone_elses_not_a_crash_at_load() -> None:
    deep: Any = 0
    for _ in range(5000):
        deep = {"x": deep}
    assert store.same_json({"history": [deep]}, {"history": []}) is False
    signer = store.HistorySigner(b"k" * 32, "ns/e/uid")
    legacy = [store.encode(0, TrialLaunched(0, 1, False, 27, 0.0)), {"seq": 1, "deep": deep}]
    for record in legacy:
        record.pop("v", None)  # what v0.1.0 wrote: no version, no MAC
    checked = store.check_histories([legacy], signer)
    assert checked.legacy and checked.refused == [1] and len(checked.histories[0]) == 1
