"""The stored histories as a load reads them: one HPOTrial at a time, each history's
records checked (MACs), noted for holes, decoded and packed as they come, so that no
more than a page of HPOTrials is held as JSON objects at once. No I/O.

Before, a load held every HPOTrial it read, records as dicts of about 2 KB each, until
it was done: at 5,000 trials of 33 records, about 330 MB, the operator's peak memory
on every restart of a big experiment (bench/scale.py restarts it at half its trials).

Whether the experiment is legacy (nothing in it was signed: kubetune v0.1.0 wrote it,
`store.check_histories`) is known only once every history is read. The histories are
read as signed ones; while no record has shown them signed, the raw records are kept
too, and if none ever does, they are read again as legacy ones (as much memory as
before, for v0.1.0's experiments only).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubetune.engine import Engine
from kubetune.events import Event, TrialPlanned, last_launch_version
from kubetune.names import ANNOTATION_FIRST_RECORDS, MAX_FIRST_RECORDS_BYTES
from kubetune.operator import gaps, store
from kubetune.operator.packed import PackedRecords, packed
from kubetune.schedulers import make_scheduler
from kubetune.spec import ExperimentSpec

Record = dict[str, Any]


@dataclass
class StoredTrial:
    """What a load keeps of one HPOTrial as read."""

    name: str
    uid: str
    version: str  # its resourceVersion: the watch delivers it again
    number: int
    node: str | None
    status: dict[str, Any]  # as stored, without its history (`status.restoring_patch`
    # clears keys others added; the history is a list, replaced whole)
    status_digest: bytes | None  # of the whole status, history included
    records: PackedRecords = field(default_factory=lambda: packed([]))
    release_0: bool = False  # its last launch was kubetune v0.1.0's
    # Its records were read from its creation (names.ANNOTATION_FIRST_RECORDS): no
    # status was written yet, and none was taken from the operator.
    first_records_only: bool = False


class HistoryReader:
    def __init__(self, signer: store.HistorySigner, legacy: bool = False) -> None:
        self.signer = signer
        self.legacy = legacy
        self.signed = legacy  # a record only a signing operator writes was seen
        self.raw: list[Sequence[Any]] | None = None if legacy else []
        self.refused: list[int] = []  # records refused, per history, in reading order
        self.refused_seqs: list[int] = []
        self.accepted_any = False
        self.error: Exception | None = None  # the first record that cannot be decoded
        self._holes = gaps.HoleFinder()
        self._merged: store.MergedHistory | None = store.MergedHistory()

    def add(self, history: Sequence[Any]) -> list[Record]:
        """Read one stored history; returns the records replayed from it."""
        accepted = self._accept(history)
        self._merge(accepted, accepted)
        return accepted

    def _accept(self, history: Sequence[Any]) -> list[Record]:
        """`history`'s records checked (MACs), counted and noted for holes."""
        # Outside the try of `_merge`, which keeps a bad record's error for later: a bug.
        assert self._merged is not None, "a history added after the events were taken"
        if not self.signed and any(store.written_since_macs(r) for r in history):
            self.signed, self.raw = True, None
        if self.raw is not None:
            self.raw.append(history)
        accepted = store.accepted_records(history, self.signer, self.legacy)
        ids = {id(r) for r in accepted}
        refused = [r for r in history if id(r) not in ids]
        self.refused.append(len(history) - len(accepted))
        self.refused_seqs += gaps.refused_numbers(refused)
        self.accepted_any |= bool(accepted)
        return accepted

    def _merge(self, accepted: list[Record], kept: Sequence[Record]) -> None:
        """`accepted` to be replayed, held as `kept` (packed, for a trial) until then."""
        if self.error is None and self._merged is not None:
            # A record that cannot be read fails the load (HistoryUnreadable) once every
            # history is read, as one that cannot be replayed does: never raised here.
            try:
                self._merged.add(accepted, kept)
                self._holes.add(accepted)
            except Exception as error:
                self.error = error

    def add_trial(self, body: dict[str, Any]) -> StoredTrial:
        status = body.get("status") or {}
        metadata = body["metadata"]
        history = status.get("history") or []
        # Until its first status write, a trial's history is what it was created with:
        # signed records like any (a forged or changed one is refused by its MAC). Only
        # then: a status without a history was emptied by someone, and is told as such.
        first_only = not status and not self.legacy
        if first_only:
            history = first_records(metadata)
        accepted = self._accept(history)
        records = packed(accepted)  # what the merge decodes again, when it comes to it
        self._merge(accepted, records)
        return StoredTrial(
            name=metadata["name"],
            uid=metadata["uid"],
            version=metadata.get("resourceVersion", ""),
            number=body["spec"]["number"],
            node=status.get("node"),
            status={k: v for k, v in status.items() if k != "history"},
            status_digest=store.json_digest(status),
            records=records,
            release_0=last_launch_version(accepted) == 0,
            first_records_only=first_only and bool(history),
        )

    @property
    def needs_legacy_reading(self) -> bool:
        """Nothing read was signed: read again (`raw`) as a legacy experiment."""
        return not self.signed and bool(self.raw)

    def take_events(self) -> Iterator[tuple[int, Event]]:
        """Every event read, in order (`store.merge_histories`), once: decoded as the
        iterator comes to them (`store.MergedHistory`); the reader lets go of them."""
        if self.error is not None:
            raise self.error
        assert self._merged is not None, "the events were taken already"
        merged, self._merged = self._merged, None
        return merged.events()

    def holes(self) -> gaps.Holes:
        return self._holes.holes(self.refused_seqs)


def first_records(metadata: dict[str, Any]) -> list[Any]:
    """The history an HPOTrial was created with (names.ANNOTATION_FIRST_RECORDS); none if
    the annotation is missing or not a JSON list (anyone allowed to edit HPOTrials may
    change annotations: what it holds is checked record by record, as a status is)."""
    text = ((metadata.get("annotations") or {}).get(ANNOTATION_FIRST_RECORDS)) or ""
    try:
        found = json.loads(text) if len(text) <= MAX_FIRST_RECORDS_BYTES else None
    except (ValueError, RecursionError):  # RecursionError: nested thousands deep
        return []
    return found if isinstance(found, list) else []


def read_again_as_legacy(
    reader: HistoryReader, trials: list[StoredTrial]
) -> tuple[HistoryReader, list[Record]]:
    """`reader`'s histories (the experiment's, then each trial's) read as a legacy
    experiment's; returns the new reader and the experiment's records."""
    assert reader.raw is not None
    legacy = HistoryReader(reader.signer, legacy=True)
    experiment_records = legacy.add(reader.raw[0])
    for trial, history in zip(trials, reader.raw[1:], strict=True):
        accepted = legacy._accept(history)
        trial.records = packed(accepted)
        legacy._merge(accepted, trial.records)
        trial.release_0 = last_launch_version(accepted) == 0
    return legacy, experiment_records


@dataclass
class Replayed:
    engine: Engine
    events: int  # replayed, lost plans made again included
    next_seq: int  # the sequence number the next event gets
    made: list[tuple[int, TrialPlanned]]  # lost plans made again (`store.repair`)


def replay(spec: ExperimentSpec, name: str, reader: HistoryReader) -> Replayed:
    """The engine rebuilt from every history `reader` read, holding none of the events it
    replayed: each is stored already, so the history writer never reads them. The events
    are decoded as the replay comes to them and let go once applied: at 5,000 trials
    (bench/scale.py's restart) a load held all 174,000 at once, then the engine's copy,
    about 19 KB a trial. Raises what a history that cannot be read or replayed raises."""
    made: list[tuple[int, TrialPlanned]] = []
    events = store.repaired(reader.take_events(), make_scheduler(spec, None), made)
    last_seq = -1

    def replayed() -> Iterator[Event]:
        nonlocal last_seq
        for seq, event in events:
            last_seq = max(last_seq, seq)
            yield event

    engine = Engine.replay(spec, name, replayed(), keep_history=False)
    return Replayed(engine, len(engine.history), last_seq + 1, made)
