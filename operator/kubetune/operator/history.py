"""The experiment's history as it is stored: each engine event numbered, signed and
filed by owner (the experiment's status, or one HPOTrial's), and compacted to what
decisions and replay read. No I/O: kubetune.operator.writes writes the records."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from kubetune.events import MOVES_MANY, Event, Reported, TrialPlanned
from kubetune.operator import store
from kubetune.operator.experiment import Experiment
from kubetune.operator.gaps import Owner, Run, Watermark
from kubetune.operator.packed import mutable, packed
from kubetune.trials import TrialRecord, start_read_from

Record = dict[str, Any]


class HistoryRecords:
    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        self.filed = 0  # the engine's events given a sequence number and filed so far
        self.next_seq = 0
        # Lists while records are added; PackedRecords once durable and left alone
        # (`settle`): most trials of a big experiment are done and hold still.
        self.trials: dict[int, Sequence[Record]] = defaultdict(list)
        self.experiment_records: list[Record] = []
        self.watermark = Watermark()  # what is durable, stamped on each record (gaps.py)
        # An event that may change any trial's phase was filed (events.MOVES_MANY): the
        # writer then looks at every trial, not only those whose histories grew.
        self.moved_many = True

    def restore(
        self,
        filed: int,
        next_seq: int,
        experiment_records: list[Record],
        trials: dict[int, Sequence[Record]],
        holes: list[Run],
    ) -> None:
        """What a load replayed: the engine's first `filed` events are these records'
        (`loading.replay`); `holes` (`gaps.Holes.to_carry`) are carried by the next records."""
        self.filed = filed
        self.next_seq = next_seq
        self.experiment_records = experiment_records
        self.trials.update((number, packed(records)) for number, records in trials.items())
        self.watermark.carry(holes)

    def written(self, owner: Owner, snapshot: list[Record]) -> None:
        """`owner`'s history as in `snapshot` is durable (its status write returned)."""
        self.watermark.written(owner, snapshot)

    def note_new_events(self) -> set[int]:
        """Give events the engine appended a sequence number and file them by owner;
        returns the trials whose histories grew."""
        grown: set[int] = set()
        for event in self.experiment.engine.history[self.filed :]:
            seq = self.next_seq
            self.next_seq += 1
            self.filed += 1
            self._file(seq, event, grown)
            self.moved_many |= isinstance(event, MOVES_MANY)
        return grown

    def add_plan(self, seq: int, plan: TrialPlanned) -> None:
        """A plan `store.repair` made again for a trial that lost its history."""
        self._append(plan.number, self._record(seq, plan, plan.number))

    def _append(self, number: int, record: Record) -> None:
        records = self.trials[number] = mutable(self.trials[number])
        records.append(record)

    def settle(self, number: int) -> None:
        """Trial `number`'s records are written as they are: a paused or ended trial's
        are held packed until the next one is added; a running trial's stay a list, not
        packed and unpacked at every write."""
        if not self.experiment.engine.trials[number].phase.holds_slot:
            self.trials[number] = packed(self.trials[number])

    def _record(self, seq: int, event: Event, owner: Owner) -> Record:
        stamp = self.watermark.stamp(seq, owner)
        return self.experiment.signer.sign({**store.encode(seq, event), **stamp})

    def _file(self, seq: int, event: Event, grown: set[int]) -> None:
        number = store.trial_number_of(event)
        record = self._record(seq, event, number)
        if number is None:
            self.experiment_records.append(record)
        else:
            self._append(number, record)
            grown.add(number)

    def compact(self, history: Sequence[Record]) -> list[Record]:
        must_keep = self.experiment.engine.scheduler.must_keep
        return store.compact(mutable(history), must_keep, shrink=self._objective_only)

    def _objective_only(self, record: Record) -> Record:
        """A report with only the objective's value (what replay reads of any report but
        the last), signed again: a history of big reports stays within its bytes."""
        metrics = record.get("metrics") or {}
        objective = self.experiment.spec.objective.metric
        kept = {k: v for k, v in metrics.items() if k == objective}
        if kept == metrics:
            return record
        return self.experiment.signer.sign({**record, "metrics": kept})


def start_report(trial: TrialRecord, step: int) -> bool:
    """Whether a report of `trial` at `step`, not recorded yet, is read by decisions as its
    attempt's first: only where it tells where the attempt started from
    (`trials.start_read_from`); otherwise it may be written late like the next ones."""
    attempt = trial.attempt
    return attempt is None or (attempt.last_step is None and start_read_from(trial.attempts, step))


def late_report(new: Sequence[Event], first: bool, must_keep: Callable[[int], bool]) -> bool:
    """Whether what a report added to the history may be written after it is answered:
    one report that no decision or replay reads (`store.decisions_read`)."""
    if len(new) != 1 or not isinstance(new[0], Reported):
        return False
    event = new[0]
    return not store.decisions_read(
        event.verdict.decision.value, event.rung, event.step, first, must_keep
    )
