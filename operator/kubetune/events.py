"""The events an experiment's history is made of, and their JSON form.

The history is the experiment's truth: the engine is a fold over it, and every decision
the engine takes is itself recorded as an event before a shell carries it out. A shell
that crashes and replays the history gets the engine back exactly as it was, including
decisions that depended on timing (which report came first).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from kubetune.space import Params
from kubetune.trials import GO_ON, Decision, TrialPhase, Verdict


class ExitKind(StrEnum):
    EXITED = "exited"  # the process ended by itself
    INTERRUPTED = "interrupted"  # lost through no fault of its own: node gone, evicted, runner died
    REFUSED = "refused"  # never ran: the cluster refused its pod (the spec is at fault)


@dataclass(frozen=True, slots=True)
class ExperimentStarted:
    at: float


@dataclass(frozen=True, slots=True)
class TrialPlanned:
    number: int
    bracket: int
    target: int | None


@dataclass(frozen=True, slots=True)
class TrialSampled:
    number: int
    params: Params
    sampler_attrs: dict[str, Any] = field(default_factory=dict)
    study_attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SearchExhausted:
    number: int


@dataclass(frozen=True, slots=True)
class TrialPromoted:
    number: int
    target: int


@dataclass(frozen=True, slots=True)
class TrialExploited:
    """Population-based training: planned trial `number` replaces member `replaces`,
    starting from the checkpoint trial `parent` saved at step `from_step`, with the
    parent's parameters explored into `params`. Recorded before any process or pod of
    it exists; it stands in for the sampler's TrialSampled."""

    number: int
    replaces: int
    parent: int
    from_step: int
    params: Params
    at: float


@dataclass(frozen=True, slots=True)
class TrialLaunched:
    number: int
    attempt: int
    resume: bool
    target: int | None
    at: float


@dataclass(frozen=True, slots=True)
class Reported:
    number: int
    attempt: int
    step: int
    metrics: dict[str, float]
    verdict: Verdict
    rung: int | None
    at: float


@dataclass(frozen=True, slots=True)
class StopRequested:
    number: int
    reason: str


@dataclass(frozen=True, slots=True)
class AttemptEnded:
    number: int
    attempt: int
    kind: ExitKind
    exit_code: int | None
    at: float
    message: str = ""


@dataclass(frozen=True, slots=True)
class ExperimentEnded:
    succeeded: bool
    reason: str
    message: str
    at: float


@dataclass(frozen=True, slots=True)
class ExperimentReopened:
    """The budget grew after the experiment had ended: it goes on."""

    at: float


@dataclass(frozen=True, slots=True)
class CostObserved:
    """What the experiment's nodes have cost so far, as the shell measured it (USD), and
    what one trial costs per hour now: the engine's budget decisions read only these."""

    usd: float
    trial_usd_per_hour: float
    at: float


@dataclass(frozen=True, slots=True)
class PriorTrial:
    """A completed trial of an earlier experiment, mapped onto this experiment's space."""

    experiment: str
    trial: str
    params: Params
    value: float


@dataclass(frozen=True, slots=True)
class WarmStarted:
    """spec.warmStart, done: the earlier experiments' completed trials, read once when the
    experiment started and mapped onto its space (kubetune.warmstart). Replay reads them
    from here, never from the earlier experiments (which may be gone). `left_out` counts
    the trials that could not be mapped, by reason."""

    warm_mode: str
    parents: list[str]
    at: float
    prior_trials: tuple[PriorTrial, ...] = ()
    left_out: dict[str, int] = field(default_factory=dict)


Event = (
    ExperimentStarted
    | WarmStarted
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
    | TrialExploited
)

# Events that may change any trial's phase (an end stops the paused ones, a reopening
# resumes them, a search running out drops the unsampled): every other event changes
# the trial it names, if any.
MOVES_MANY = (SearchExhausted, ExperimentEnded, ExperimentReopened)


def touched_trials(events: Iterable[Event]) -> set[int] | None:
    """The numbers of the trials these events changed; None when one may have changed
    any trial (`MOVES_MANY`)."""
    numbers: set[int] = set()
    for event in events:
        if isinstance(event, MOVES_MANY):
            return None
        number = getattr(event, "number", None)
        if number is not None:
            numbers.add(number)
    return numbers


_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        ExperimentStarted,
        WarmStarted,
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
        TrialExploited,
    )
}
EVENT_TYPES = _TYPES  # every event class, by the name records carry

# ----- The stored form: a versioned record ------------------------------------------
#
# A record is a JSON object: `type` (the event's class name), `v` (the format's major
# version) and one key per field. Histories outlive the operator that wrote them, so
# decoding is explicit per field and tolerant in the one direction that is safe:
# * a key this version does not know is ignored (a later minor change added it);
# * a missing field that has a default, or may be None, takes it (an earlier version
#   did not write it, or the API server pruned a null);
# * a missing required field, a value of the wrong kind, an unknown `type` or a major
#   version above FORMAT_VERSION raise HistoryFormatError naming the record and field.
# Records without `v` are version 0: what kubetune v0.1.0 (f13db72) wrote, the same
# shape as version 1. Adding a field with a default is not a version change; renaming
# or removing one, or changing a field's meaning, is: bump FORMAT_VERSION and decode
# the older version here. The operator's MAC (store.HistorySigner) covers each record
# as it was stored, `v` included, so records of any version keep verifying.

FORMAT_VERSION = 1
VERSION_FIELD = "v"


class HistoryFormatError(ValueError):
    """A stored record this kubetune cannot read; the message names what and why."""


def _encode_float(value: float) -> float | str:
    # JSON has no NaN or infinity; the history must survive a round trip exactly.
    if value != value or value in (float("inf"), float("-inf")):
        return repr(value)
    return value


def to_record(event: Event) -> dict[str, Any]:
    record: dict[str, Any] = {"type": type(event).__name__, VERSION_FIELD: FORMAT_VERSION}
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
        elif item.name == "prior_trials":
            value = [dataclasses.asdict(trial) for trial in value]
        record[item.name] = value
    return record


def _int(value: Any) -> int:
    # Go's JSON may hand back 3.0 for 3; a bool is not a number here.
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise TypeError(f"expected an integer, got {value!r}")
    return int(value)


def _number(value: Any) -> float:
    # Kept as stored (an int stays an int): replay must see the values that were decided on.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {value!r}")
    return dict(value)


def _metrics(value: Any) -> dict[str, float]:
    return {str(k): float(v) for k, v in _object(value).items()}


def _verdict(value: Any) -> Verdict:
    data = _object(value)
    final = data.get("final")
    verdict = Verdict(
        Decision(data["decision"]),
        _str(data.get("reason", "")),
        TrialPhase(final) if final else None,
    )
    return GO_ON if verdict == GO_ON else verdict  # one object, as the engine keeps it


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {value!r:.80}")
    return [_str(item) for item in value]


def _counts(value: Any) -> dict[str, int]:
    return {str(k): _int(v) for k, v in _object(value).items()}


def _prior_trials(value: Any) -> tuple[PriorTrial, ...]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {value!r:.80}")
    trials = []
    for item in value:
        data = _object(item)
        trials.append(
            PriorTrial(
                _str(data["experiment"]),
                _str(data["trial"]),
                _object(data["params"]),
                _number(data["value"]),
            )
        )
    return tuple(trials)


def _optional(decode: Any) -> Any:
    return lambda value: None if value is None else decode(value)


# Every field of every event, by name, and how to read it. A field added to an event
# must be added here (test_records checks the table covers every field).
FIELD_DECODERS: dict[str, Any] = {
    "at": _number,
    "number": _int,
    "bracket": _int,
    "target": _optional(_int),
    "params": _object,
    "sampler_attrs": _object,
    "study_attrs": _object,
    "attempt": _int,
    "resume": _bool,
    "step": _int,
    "metrics": _metrics,
    "verdict": _verdict,
    "rung": _optional(_int),
    "reason": _str,
    "kind": ExitKind,
    "exit_code": _optional(_int),
    "message": _str,
    "succeeded": _bool,
    "usd": _number,
    "trial_usd_per_hour": _number,
    "warm_mode": _str,
    "parents": _strings,
    "prior_trials": _prior_trials,
    "left_out": _counts,
    "replaces": _int,
    "parent": _int,
    "from_step": _int,
}


def record_version(record: dict[str, Any]) -> int:
    version = record.get(VERSION_FIELD, 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise HistoryFormatError(f"history record has a bad format version {version!r}")
    return version


def last_launch_version(records: Sequence[dict[str, Any]]) -> int | None:
    """The format version of a trial's last TrialLaunched record (None: never launched).

    Version 0 means kubetune v0.1.0 launched the pod that runs now: it holds a token of
    that release's scope (`tokens.release_0_scope`)."""
    launches = [r for r in records if isinstance(r, dict) and r.get("type") == "TrialLaunched"]
    return record_version(launches[-1]) if launches else None


def from_record(record: dict[str, Any]) -> Event:
    if not isinstance(record, dict):
        raise HistoryFormatError(f"history record is not an object: {record!r:.80}")
    version = record_version(record)
    kind = record.get("type")
    if version > FORMAT_VERSION:
        raise HistoryFormatError(
            f"history record {kind!r} has format version {version}, newer than this "
            f"kubetune reads ({FORMAT_VERSION}): it was written by a later kubetune"
        )
    cls = _TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise HistoryFormatError(f"unknown event type in history: {kind!r}")
    values: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        if item.name not in record or record[item.name] is None:
            # The API server drops null fields inside the history lists (a merge patch
            # prunes them): a field that may be None and is missing was None.
            if "None" in str(item.type):
                values[item.name] = None
            elif (
                item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING
            ):
                raise HistoryFormatError(f"history record {kind}: field {item.name!r} is missing")
            continue
        try:
            values[item.name] = FIELD_DECODERS[item.name](record[item.name])
        except (TypeError, ValueError, KeyError) as error:
            raise HistoryFormatError(
                f"history record {kind}: field {item.name!r} is unreadable ({error})"
            ) from None
    return cls(**values)
