"""The engine's history, kept in custom resources ("Kubernetes is the database").

Each event carries a global sequence number. Events about one trial live in that
trial's `HPOTrial.status.history`; the rest (start, end, exhaustion) in the experiment's
`status.history`. Rebuilding merges them by sequence number and replays them.

Objects stay far below etcd's size limit: a trial's history keeps every event that
carries a decision or a rung, the first and last report of each attempt, the reports at
milestone steps (what median stopping looks at), and an evenly thinned subset of the
other reports (`compact`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from kubetune.events import (
    Event,
    ExperimentEnded,
    ExperimentReopened,
    ExperimentStarted,
    SearchExhausted,
    from_record,
    to_record,
)
from kubetune.schedulers.base import is_milestone
from kubetune.trials import Decision

MAX_TRIAL_HISTORY = 400

EXPERIMENT_EVENTS = (ExperimentStarted, ExperimentEnded, ExperimentReopened, SearchExhausted)


def trial_number_of(event: Event) -> int | None:
    """The trial an event belongs to, or None for experiment-level events."""
    if isinstance(event, EXPERIMENT_EVENTS):
        return None
    return getattr(event, "number", None)


def encode(seq: int, event: Event) -> dict[str, Any]:
    return {"seq": seq, **to_record(event)}


def decode(record: dict[str, Any]) -> tuple[int, Event]:
    data = dict(record)
    seq = int(data.pop("seq"))
    return seq, from_record(data)


def merge_histories(histories: Iterable[Sequence[dict[str, Any]]]) -> list[tuple[int, Event]]:
    """All stored events, in the order they happened."""
    merged = [decode(record) for history in histories for record in history]
    merged.sort(key=lambda item: item[0])
    return merged


def compact(records: list[dict[str, Any]], limit: int = MAX_TRIAL_HISTORY) -> list[dict[str, Any]]:
    """At most `limit` records, dropping only reports no decision depends on."""
    if len(records) <= limit:
        return records
    firsts: dict[int, int] = {}
    lasts: dict[int, int] = {}
    for index, record in enumerate(records):
        if record["type"] == "Reported":
            firsts.setdefault(record["attempt"], index)
            lasts[record["attempt"]] = index

    def essential(index: int, record: dict[str, Any]) -> bool:
        if record["type"] != "Reported":
            return True
        decided = record["verdict"]["decision"] != Decision.CONTINUE.value
        return (
            decided
            or record.get("rung") is not None
            or is_milestone(record["step"])
            or index
            in (
                firsts[record["attempt"]],
                lasts[record["attempt"]],
            )
        )

    keep = {i for i, r in enumerate(records) if essential(i, r)}
    optional = [i for i in range(len(records)) if i not in keep]
    room = max(limit - len(keep), 0)
    if room and optional:
        stride = len(optional) / room
        keep.update(optional[int(k * stride)] for k in range(room))
    return [records[i] for i in sorted(keep)]
