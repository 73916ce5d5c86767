"""Holes in stored histories (operator/gaps.py): what a killed operator never wrote is
not told as deleted, at this load or any later one; what was durable and is gone is."""

from __future__ import annotations

from typing import Any

from kubetune.events import Event, Reported, TrialLaunched
from kubetune.operator import gaps, store
from kubetune.operator.gaps import Holes, Watermark
from kubetune.trials import Decision, Verdict

Owner = int | None


class Operator:
    """Makes records as HistoryRecords does and keeps what its writes made durable;
    `kill` loses everything else."""

    def __init__(self, stored: dict[Owner, list[dict[str, Any]]], holes: list[int]) -> None:
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
    return holes, Operator(stored, holes.missing + holes.lost)


def test_records_a_killed_operator_never_wrote_are_not_missing_now_or_after_restarts() -> None:
    op = Operator({}, [])
    op.make(0)
    op.write(0)
    late = op.make(0, 2)  # a late report of trial 0, answered, not yet written
    op.make(1)
    op.make(1, 2)
    op.write(1)  # trial 1 is durable past trial 0's late report: then the SIGKILL
    holes, op = restart(op.stored)
    assert holes == Holes(missing=[], lost=[late])
    # The restarted operator carries the hole on what it makes next; once that is durable
    # and more is written after it, no later load finds the hole again.
    op.make(0, 3)
    op.write(0)
    op.make(1, 3)
    op.write(1)
    holes, op = restart(op.stored)
    assert holes == Holes([], [])
    # The same, three kills in a row, each losing a late report.
    lost = []
    for _ in range(3):
        op.make(1, 4)
        op.write(1)
        lost.append(op.make(0, 5))
        op.make(1, 6)
        op.write(1)
        holes, op = restart(op.stored)
        assert holes.missing == [], (lost, holes)
    op.make(0, 7)
    op.write(0)
    assert gaps.find_holes(op.histories()) == Holes([], [])


def test_each_owner_carries_the_holes_so_one_lost_carrier_loses_nothing() -> None:
    op = Operator({}, [])
    op.make(0)
    op.write(0)
    lost = op.make(0, 2)
    op.make(1)
    op.write(1)
    holes, op = restart(op.stored)
    assert holes.lost == [lost]
    # Killed again: trial 0's carrier was not written, trial 1's was.
    carrier = op.make(0, 3)
    op.make(1, 2)
    op.make(1, 3)
    op.write(1)
    records = op.stored[1][-2:]
    assert [r.get(gaps.LOST_FIELD) for r in records] == [[[lost, lost]], None]
    holes, op = restart(op.stored)
    assert holes == Holes(missing=[], lost=[carrier])


def test_a_durable_record_deleted_is_missing_and_told_once() -> None:
    op = Operator({}, [])
    for step in range(1, 4):
        op.make(0, step)
        op.make(1, step)
        op.write(0)
        op.write(1)
    deleted = op.stored[1].pop(1)["seq"]  # someone removes trial 1's step-2 report
    other = op.stored[0].pop(0)["seq"]  # and trial 0's first
    holes, op = restart(op.stored)
    assert holes == Holes(missing=sorted([deleted, other]), lost=[])
    op.make(0, 4)
    op.write(0)
    holes, _ = restart(op.stored)
    assert holes == Holes([], []), "told at the load that found it, not again"


def test_records_without_a_watermark_tell_nothing_and_refused_ones_are_not_believed() -> None:
    older = [store.encode(seq, TrialLaunched(seq, 1, False, 27, 0.0)) for seq in (0, 2, 4)]
    assert gaps.find_holes([older]) == Holes(missing=[], lost=[1, 3])
    forged = {**store.encode(3, TrialLaunched(7, 1, False, 27, 0.0)), "durable": 10**9}
    assert gaps.find_holes([older], refused=[forged]) == Holes([], [1])
    # A refused record's number bounds nothing: the holes end at the highest signed one.
    far = {**store.encode(10**15, TrialLaunched(8, 1, False, 27, 0.0)), "durable": 10**15}
    assert gaps.find_holes([older], refused=[far]) == Holes([], [1, 3])


def test_compaction_keeps_the_records_that_carry_holes() -> None:
    op = Operator({}, [])
    for step in range(1, 300):
        op.make(0, step, report=True)
        op.write(0)
    op = Operator(op.stored, [3, 4, 9])  # restarted: a load found these holes
    for step in range(300, 600):
        op.make(0, step, report=True)
        op.write(0)
    carriers = [r for r in op.made[0] if gaps.LOST_FIELD in r]
    assert [(c["step"], c[gaps.LOST_FIELD]) for c in carriers] == [(300, [[3, 4], [9, 9]])]
    kept = store.compact(op.made[0], lambda step: step % 100 == 1, limit=50)
    assert len(kept) <= 50 and carriers[0] in kept
    assert gaps.find_holes([kept]) == Holes([], [])


def test_a_mass_deletion_carries_at_most_a_bounded_list() -> None:
    watermark = Watermark()
    watermark.carry(range(0, 4 * gaps.MAX_LOST_RUNS, 2))
    stamp = watermark.stamp(10**6, 0)
    assert len(stamp[gaps.LOST_FIELD]) == gaps.MAX_LOST_RUNS
