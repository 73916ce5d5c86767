"""The engine's history in memory (kubetune/eventlog.py): positions count from the
experiment's first event whatever was let go, and an event let go is never read."""

from __future__ import annotations

import pytest

from kubetune.eventlog import EventLog, ReleasedEvents
from kubetune.events import ExperimentStarted, TrialPlanned


def planned(count: int) -> list[TrialPlanned]:
    return [TrialPlanned(number, 0, None) for number in range(count)]


def test_positions_and_cursors_stay_valid_after_events_are_let_go() -> None:
    log = EventLog([ExperimentStarted(0.0)])
    log += planned(4)
    assert len(log) == 5 and log == [ExperimentStarted(0.0), *planned(4)]
    cursor = 3
    log.release(cursor)
    assert log.first_held == 3 and len(log) == 5  # positions count from the first event
    assert log[cursor:] == planned(4)[2:]
    assert log[-1] == TrialPlanned(3, 0, None) and log[4] == log[-1]
    log.append(TrialPlanned(4, 0, None))
    assert log[len(log) - 1 :] == [TrialPlanned(4, 0, None)]
    assert log[len(log) :] == []  # a reader with nothing new
    log.release(2)  # never takes back what was let go
    assert log.first_held == 3
    log.release(100)  # never past the end
    assert log.first_held == len(log) == 6
    assert log[6:] == []


@pytest.mark.parametrize(
    "read",
    [
        lambda log: log[0],
        lambda log: log[1:],
        lambda log: log[-5],
        lambda log: list(log),
        lambda log: list(reversed(log)),
    ],
)
def test_an_event_let_go_is_refused_never_replaced_by_another(read) -> None:
    log = EventLog(planned(5))
    log.release(2)
    with pytest.raises(ReleasedEvents):
        read(log)
    with pytest.raises(IndexError):
        log[5]  # past the end is the usual error
    assert log != planned(5) and log != EventLog(planned(5))
