"""The events an experiment's history is made of, and their JSON form.

The history is the experiment's truth: the engine is a fold over it, and every decision
the engine takes is itself recorded as an event before a shell carries it out. A shell
that crashes and replays the history gets the engine back exactly as it was, including
decisions that depended on timing (which report came first).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from kubetune.space import Params
from kubetune.trials import Decision, TrialPhase, Verdict


class ExitKind(StrEnum):
    EXITED = "exited"  # the process ended by itself
    INTERRUPTED = "interrupted"  # lost through no fault of its own: node gone, evicted, runner died
    REFUSED = "refused"  # never ran: the cluster refused its pod (the spec is at fault)


@dataclass(frozen=True)
class ExperimentStarted:
    at: float


@dataclass(frozen=True)
class TrialPlanned:
    number: int
    bracket: int
    target: int | None


@dataclass(frozen=True)
class TrialSampled:
    number: int
    params: Params
    sampler_attrs: dict[str, Any] = field(default_factory=dict)
    study_attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchExhausted:
    number: int


@dataclass(frozen=True)
class TrialPromoted:
    number: int
    target: int


@dataclass(frozen=True)
class TrialLaunched:
    number: int
    attempt: int
    resume: bool
    target: int | None
    at: float


@dataclass(frozen=True)
class Reported:
    number: int
    attempt: int
    step: int
    metrics: dict[str, float]
    verdict: Verdict
    rung: int | None
    at: float


@dataclass(frozen=True)
class StopRequested:
    number: int
    reason: str


@dataclass(frozen=True)
class AttemptEnded:
    number: int
    attempt: int
    kind: ExitKind
    exit_code: int | None
    at: float
    message: str = ""


@dataclass(frozen=True)
class ExperimentEnded:
    succeeded: bool
    reason: str
    message: str
    at: float


@dataclass(frozen=True)
class ExperimentReopened:
    """The budget grew after the experiment had ended: it goes on."""

    at: float


@dataclass(frozen=True)
class CostObserved:
    """What the experiment's nodes have cost so far, as the shell measured it (USD), and
    what one trial costs per hour now: the engine's budget decisions read only these."""

    usd: float
    trial_usd_per_hour: float
    at: float


Event = (
    ExperimentStarted
    | TrialPlanned
    | TrialSampled
    | SearchExhausted
    | TrialPromoted
    | TrialLaunched
    | Reported
    | StopRequested
    | AttemptEnded
    | ExperimentEnded
    | ExperimentReopened
    | CostObserved
)

_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        ExperimentStarted,
        TrialPlanned,
        TrialSampled,
        SearchExhausted,
        TrialPromoted,
        TrialLaunched,
        Reported,
        StopRequested,
        AttemptEnded,
        ExperimentEnded,
        ExperimentReopened,
        CostObserved,
    )
}


def _encode_float(value: float) -> float | str:
    # JSON has no NaN or infinity; the history must survive a round trip exactly.
    if value != value or value in (float("inf"), float("-inf")):
        return repr(value)
    return value


def to_record(event: Event) -> dict[str, Any]:
    record: dict[str, Any] = {"type": type(event).__name__}
    for item in dataclasses.fields(event):
        value = getattr(event, item.name)
        if isinstance(value, Verdict):
            value = {
                "decision": value.decision.value,
                "reason": value.reason,
                "final": value.final.value if value.final else None,
            }
        elif item.name == "metrics":
            value = {k: _encode_float(v) for k, v in value.items()}
        record[item.name] = value
    return record


def from_record(record: dict[str, Any]) -> Event:
    data = dict(record)
    cls = _TYPES.get(data.pop("type", None))
    if cls is None:
        raise ValueError(f"unknown event type in history: {record.get('type')!r}")
    if "verdict" in data:
        verdict = data["verdict"]
        data["verdict"] = Verdict(
            Decision(verdict["decision"]),
            verdict.get("reason", ""),
            TrialPhase(verdict["final"]) if verdict.get("final") else None,
        )
    if "metrics" in data:
        data["metrics"] = {k: float(v) for k, v in data["metrics"].items()}
    if "kind" in data:
        data["kind"] = ExitKind(data["kind"])
    # The API server drops null fields inside the history lists (a merge patch prunes
    # them): a field that may be None and is missing was None.
    for item in dataclasses.fields(cls):
        if item.name not in data and "None" in str(item.type):
            data[item.name] = None
    return cls(**data)
