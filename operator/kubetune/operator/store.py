"""The engine's history, kept in custom resources ("Kubernetes is the database").

Each event carries a global sequence number. Events about one trial live in that
trial's `HPOTrial.status.history`; the rest (start, end, exhaustion) in the experiment's
`status.history`. Rebuilding merges them by sequence number and replays them.

Every record carries a MAC under a key derived from the operator's token key, over the
experiment's identity (namespace, name, UID) and the record's content as the API server
gives it back (null fields pruned, whole floats turned into integers). Loading keeps only
records whose MAC is right: a record written by anyone else (a user with `hpotrials/status`
rights, a copy from another experiment) is refused, counted, and never replayed. Records
without any MAC are accepted only when no record of the experiment carries one and none
is of a format version (1 and later) that only signing operators wrote: an experiment
written by kubetune v0.1.0, whose records are signed on that first load
(`check_histories`). Someone who strips every MAC and every version from a history is
not told from v0.1.0 by the records alone; the owned-objects admission policy (only the
operator writes statuses) is what keeps them from writing it.

A history with holes (an HPOTrial deleted while the operator was down, records refused)
is repaired where a plan is all that is missing (`repair`); what cannot be replayed
fails the experiment with a condition saying why, never the operator.

Objects stay far below etcd's size limit: a trial's history keeps every event that
carries a decision or a rung, the first and last report of each attempt, the reports at
milestone steps (what median stopping looks at), and an evenly thinned subset of the
other reports (`compact`).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from kubetune.events import (
    Event,
    ExperimentEnded,
    ExperimentReopened,
    ExperimentStarted,
    SearchExhausted,
    TrialPlanned,
    from_record,
    record_version,
    to_record,
)
from kubetune.operator.gaps import DURABLE_FIELD, LOST_FIELD
from kubetune.schedulers.base import SchedulerPolicy
from kubetune.trials import Decision

MAX_TRIAL_HISTORY = 400
# Bytes of a trial's stored history (its JSON): an HPOTrial stays far below etcd's
# 1.5 MB request limit whatever its reports carry (450 reports of 63 metrics with long
# names made one of 1.84 MB, and every later write of it failed).
MAX_TRIAL_HISTORY_BYTES = 256 * 1024

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
    for field in (MAC_FIELD, DURABLE_FIELD, LOST_FIELD):
        data.pop(field, None)
    return seq, from_record(data)


def merge_histories(histories: Iterable[Sequence[dict[str, Any]]]) -> list[tuple[int, Event]]:
    """All stored events, in the order they happened; a record stored twice counts once.

    A plan sorts before another event of the same sequence number: `repair` files the
    plans it makes under the number of the event they must precede."""
    merged = MergedHistory()
    for history in histories:
        merged.add(history)
    return list(merged.events())


# An event merged: its order (`_order`), its history's place among those added, its
# place in that history, its record's identity, and the event with its number.
_Merged = tuple[tuple[int, int, int], int, int, str, tuple[int, Event]]
_Opened = tuple[tuple[int, int, int], int, int, str, tuple[int, Event], Iterator[_Merged]]


class MergedHistory:
    """`merge_histories` one history at a time, for a load that must not hold every event
    decoded at once (operator/loading.py): each history is kept as given (a load gives it
    packed) with its first sequence number, and is decoded only while the merge is inside
    it. At bench/scale.py's restart at 5,000 trials the events decoded at once were all
    174,000 of them, about 19 KB a trial with the identities they were deduplicated by.

    The order is that of a stable sort of every event, histories in the order added, by
    `_order`. A record stored twice has one identity, its MAC (or its JSON where nothing
    is signed), which covers its sequence number: the copies sort together, and the first
    added counts."""

    def __init__(self) -> None:
        self._histories: list[tuple[int, int, Sequence[dict[str, Any]]]] = []

    def add(
        self, history: Sequence[dict[str, Any]], kept: Sequence[dict[str, Any]] | None = None
    ) -> None:
        """`kept`: `history` as it is to be held until merged (a load packs it); raises as
        `decode` would for a record without a number."""
        if history:
            first_seq = min(int(record["seq"]) for record in history)
            self._histories.append((first_seq, len(self._histories), kept or history))

    def events(self) -> Iterator[tuple[int, Event]]:
        """Every event added, in order, once; raises what `decode` raises for a record
        that cannot be read, when the merge reaches its history."""
        waiting = sorted(self._histories, key=lambda h: (h[0], h[1]))
        self._histories = []
        opened: list[_Opened] = []  # a heap: each open history's next event, and the rest
        group: tuple[int, int, int] | None = None
        identities: set[str] = set()
        following = 0
        while opened or following < len(waiting):
            # A history not opened yet holds nothing below its first sequence number.
            while following < len(waiting) and (
                not opened or waiting[following][0] <= opened[0][0][0]
            ):
                _, index, history = waiting[following]
                following += 1
                items = iter(_decoded(index, history))
                first = next(items, None)
                if first is not None:
                    heapq.heappush(opened, (*first, items))
            order, _, _, identity, event, items = heapq.heappop(opened)
            if (after := next(items, None)) is not None:
                heapq.heappush(opened, (*after, items))
            if order != group:
                group, identities = order, set()
            if identity not in identities:
                identities.add(identity)
                yield event


def _decoded(index: int, history: Iterable[dict[str, Any]]) -> list[_Merged]:
    merged = []
    for position, record in enumerate(history):
        identity = record.get(MAC_FIELD) or json.dumps(canonical(record), sort_keys=True)
        event = decode(record)
        merged.append((_order(event), index, position, identity, event))
    merged.sort(key=lambda item: item[:3])
    return merged


def _order(item: tuple[int, Event]) -> tuple[int, int, int]:
    seq, event = item
    if isinstance(event, TrialPlanned):
        return seq, 0, event.number
    return seq, 1, 0


# ----- MACs: only the operator's own records are replayed ------------------------------

MAC_FIELD = "mac"
_MAC_CONTEXT = b"kubetune history records v1"
_MAC_HEX_CHARS = 32  # 128 bits: 400 records of a trial cost 16 KB of MAC, not 26


def canonical(value: Any) -> Any:
    """A JSON value as it comes back from the API server: null fields of objects pruned
    (a merge patch drops them), floats with an integral value as integers (Go's JSON)."""
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def same_json(a: Any, b: Any) -> bool:
    """Whether two statuses are equal as the API server keeps them; a value nested too
    deep to compare (someone else's status) is not equal."""
    try:
        return bool(canonical(a) == canonical(b))
    except RecursionError:
        return False


def json_digest(value: Any) -> bytes | None:
    """A digest of a status as the API server keeps it (`canonical`): what the operator
    remembers of each status it wrote, not the status itself (a trial's history is most
    of it); None for a value nested too deep to compare (someone else's status)."""
    try:
        text = json.dumps(canonical(value), sort_keys=True, separators=(",", ":"))
    except (RecursionError, TypeError, ValueError):
        return None
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class HistorySigner:
    """MACs of history records under a key derived from the operator's token key (never
    the token key itself), bound to one experiment object (`tokens.experiment_scope`)."""

    def __init__(self, token_key: bytes, scope: str) -> None:
        self._key = hmac.new(token_key, _MAC_CONTEXT, hashlib.sha256).digest()
        self._scope = scope.encode()

    def mac(self, record: dict[str, Any]) -> str:
        content = canonical({k: v for k, v in record.items() if k != MAC_FIELD})
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        digest = hmac.new(self._key, self._scope + b"\n" + text.encode(), hashlib.sha256)
        return digest.hexdigest()[:_MAC_HEX_CHARS]

    def sign(self, record: dict[str, Any]) -> dict[str, Any]:
        return {**{k: v for k, v in record.items() if k != MAC_FIELD}, MAC_FIELD: self.mac(record)}

    def valid(self, record: Any) -> bool:
        try:
            mac = record.get(MAC_FIELD)
            return isinstance(mac, str) and hmac.compare_digest(mac, self.mac(record))
        except Exception:  # not a JSON object, nested too deep: not ours either way
            return False


@dataclass(frozen=True)
class CheckedHistories:
    histories: list[list[dict[str, Any]]]  # the accepted records, each signed
    refused: list[int]  # records refused, per history
    legacy: bool  # nothing was signed: an older operator wrote it all


def _signed(signer: HistorySigner, record: Any) -> dict[str, Any] | None:
    """A legacy record signed as it stands; None (refused) for one that is not an object
    or is nested too deep to sign."""
    if not isinstance(record, dict):
        return None
    try:
        return signer.sign(record)
    except RecursionError:
        return None


def written_since_macs(record: Any) -> bool:
    """A record only a signing operator writes: one with a MAC, or of format version 1
    or later (records got a version after they got MACs; v0.1.0, the only release
    without MACs, wrote version 0). Stripping every MAC from such a history does not
    make it legacy: its unsigned records are refused, not signed anew."""
    if not isinstance(record, dict):
        return False
    if MAC_FIELD in record:
        return True
    try:
        return record_version(record) >= 1
    except Exception:  # a bad version: not what v0.1.0 wrote
        return True


def accepted_records(
    history: Sequence[Any], signer: HistorySigner, legacy: bool
) -> list[dict[str, Any]]:
    """The records of `history` replayed: those with a valid MAC; in a legacy history
    (nothing in the experiment was signed) every object, signed as it stands."""
    if legacy:
        return [s for r in history if (s := _signed(signer, r))]
    return [r for r in history if signer.valid(r)]


def check_histories(histories: Sequence[Sequence[Any]], signer: HistorySigner) -> CheckedHistories:
    legacy = not any(written_since_macs(r) for h in histories for r in h)
    accepted = [accepted_records(h, signer, legacy) for h in histories]
    refused = [len(h) - len(a) for h, a in zip(histories, accepted, strict=True)]
    return CheckedHistories(accepted, refused, legacy=legacy)


def repair(
    merged: Iterable[tuple[int, Event]], scheduler: SchedulerPolicy
) -> tuple[list[tuple[int, Event]], list[tuple[int, TrialPlanned]]]:
    """`repaired`, as lists: the history to replay and the plans made."""
    made: list[tuple[int, TrialPlanned]] = []
    return list(repaired(merged, scheduler, made)), made


def repaired(
    merged: Iterable[tuple[int, Event]],
    scheduler: SchedulerPolicy,
    made: list[tuple[int, TrialPlanned]],
) -> Iterator[tuple[int, Event]]:
    """The merged history with the plans of trials whose own history is gone put back.

    Trials are numbered in the order they were planned, so an event of trial k (or the
    plan of k) with trials below k never planned means their plans were lost: each is
    planned again just before it, as `Engine.decide` plans (the scheduler's bracket and
    first target for that number), and is sampled and run anew. A plan of a trial
    planned already (a plan made here and stored before) is left out.
    Yields the history to replay; appends the plans made, with their sequence numbers,
    to `made`."""
    planned = 0
    for seq, event in merged:
        number = trial_number_of(event)
        if isinstance(event, SearchExhausted):
            planned = min(planned, event.number)
        elif isinstance(event, TrialPlanned) and event.number < planned:
            continue
        if number is not None:
            wanted = number if isinstance(event, TrialPlanned) else number + 1
            for missing in range(planned, wanted):
                plan = TrialPlanned(
                    missing, scheduler.bracket(missing), scheduler.initial_target(missing)
                )
                made.append((seq, plan))
                yield seq, plan
            planned = max(planned, wanted, number + 1 if isinstance(event, TrialPlanned) else 0)
        yield seq, event


def _size(record: dict[str, Any]) -> int:
    return len(json.dumps(record, separators=(",", ":"))) + 1


def decisions_read(
    decision: str,
    rung: int | None,
    step: int,
    first_of_attempt: bool,
    must_keep: Callable[[int], bool],
) -> bool:
    """Whether a report is one that decisions or replay read: it carries a decision or
    a rung, is at a step the scheduler reads (`must_keep`), or is its attempt's first
    (`compact` keeps every attempt's first; the report path asks this only of a first
    report that says where its attempt started, `history.start_report`). Only the
    others may be thinned out of a history (`compact`) or written late
    (`operator.writes`: acknowledged before they are durable)."""
    return (
        decision != Decision.CONTINUE.value
        or rung is not None
        or must_keep(step)
        or first_of_attempt
    )


def compact(
    records: list[dict[str, Any]],
    must_keep: Callable[[int], bool],
    limit: int = MAX_TRIAL_HISTORY,
    max_bytes: int = MAX_TRIAL_HISTORY_BYTES,
    shrink: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """At most `limit` records and about `max_bytes` of JSON, dropping only reports no
    decision depends on: the scheduler says which steps its decisions read
    (`SchedulerPolicy.must_keep`). When the records that must stay are too big still,
    `shrink` (the objective's value only, signed again) is applied to their reports,
    the last report of the history excepted."""
    sizes = [_size(r) for r in records]
    if len(records) <= limit and sum(sizes) <= max_bytes:
        return records
    firsts: dict[int, int] = {}
    lasts: dict[int, int] = {}
    for index, record in enumerate(records):
        if record["type"] == "Reported":
            firsts.setdefault(record["attempt"], index)
            lasts[record["attempt"]] = index

    carrier = max((i for i, r in enumerate(records) if LOST_FIELD in r), default=-1)

    def essential(index: int, record: dict[str, Any]) -> bool:
        if record["type"] != "Reported" or index == carrier:
            return True  # the last `lost` holds the holes loads found (operator/gaps.py)
        return index == lasts[record["attempt"]] or decisions_read(
            record["verdict"]["decision"],
            record.get("rung"),
            record["step"],
            index == firsts[record["attempt"]],
            must_keep,
        )

    keep = {i for i, r in enumerate(records) if essential(i, r)}
    optional = [i for i in range(len(records)) if i not in keep]
    room = max(limit - len(keep), 0)
    left = max_bytes - sum(sizes[i] for i in keep)
    if optional:  # as many of the others as fit in both bounds, evenly spread
        average = sum(sizes[i] for i in optional) / len(optional)
        room = min(room, len(optional), max(int(left // average), 0))
    if room and optional:
        stride = len(optional) / room
        keep.update(optional[int(k * stride)] for k in range(room))
    kept = [records[i] for i in sorted(keep)]
    if shrink is None or sum(_size(r) for r in kept) <= max_bytes:
        return kept
    last = max((i for i, r in enumerate(kept) if r["type"] == "Reported"), default=-1)
    return [shrink(r) if r["type"] == "Reported" and i != last else r for i, r in enumerate(kept)]
