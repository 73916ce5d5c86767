"""Holes in a stored history: records someone deleted, told apart from records a killed
operator never wrote. No I/O.

Every record gets the next sequence number when it is made, but records become durable
per owner (one HPOTrial's status, or the experiment's), in writes that overlap and in an
order that is not the numbers' (reports no decision reads are written seconds late,
operator/writes.py; a sampling trial is written with its parameters). So a SIGKILLed
operator leaves holes below records that were written, and a hole alone proves nothing.

Each record therefore carries, signed with it, `durable`: a number below which every
record was durable when this one was made (`Watermark`). A hole below the highest such
number was durable once: it was deleted (Event HistoryRecordsMissing). A hole above it
may be a crash's loss and is not told. Either way the loaded operator carries its holes,
with those earlier loads carried, in `lost` ([first, last] runs) on the first record
each owner makes next, so that no later load tells them again: a record durable after a
load means its owner's carrier is (an owner's history is written whole, in order).
Compaction keeps each history's last carrier (it holds what the older ones do). Holes
compaction makes (reports strictly between the first and last kept report of one
attempt) are never holes. Records without `durable`, written before it existed, raise
no watermark: holes among them are not told.

Not seen (a deletion not told, never a false alarm): records deleted above the highest
watermark (the last records written); a hole strictly inside any attempt's kept reports,
whoever's it was (compaction's holes are not told apart from others); holes a coarsened
`lost` list covers; deletions while a record that is never written (a trial whose
HPOTrial name someone else's object holds) keeps the watermark down.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

DURABLE_FIELD = "durable"
LOST_FIELD = "lost"
# Runs one record carries; more are coarsened (runs joined across the smallest gaps),
# which can hide a later deletion there but never tells a crash's loss as one.
MAX_LOST_RUNS = 256

Owner = int | None  # a trial's number, or None: the experiment
Run = tuple[int, int]  # first and last number, inclusive


@dataclass(frozen=True)
class Holes:
    missing: list[Run]  # were durable once: deleted
    lost: list[Run]  # may be a killed operator's unwritten records
    known: list[Run]  # carried by earlier loads' records

    def to_carry(self) -> list[Run]:
        """What the next carriers hold: nothing when this load found no new hole."""
        if not (self.missing or self.lost):
            return []
        return coarsened(merged([*self.missing, *self.lost, *self.known]), MAX_LOST_RUNS)


def count(runs: Iterable[Run]) -> int:
    return sum(last - first + 1 for first, last in runs)


def describe(runs: Sequence[Run], shown: int = 10) -> str:
    """Runs as "3, 7-9, ..." (at most `shown` of them)."""
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs[:shown])
    return text + (", ..." if len(runs) > shown else "")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _lost_runs(value: Any) -> Iterable[Run]:
    for run in value if isinstance(value, list) else ():
        if isinstance(run, list) and len(run) == 2:
            first, last = _int(run[0]), _int(run[1])
            if first is not None and last is not None and first <= last:
                yield first, last


def merged(runs: Iterable[Run]) -> list[Run]:
    """Runs (or any closed intervals) as sorted, disjoint, non-adjacent ones."""
    found: list[Run] = []
    for low, high in sorted(runs):
        if found and low <= found[-1][1] + 1:
            found[-1] = (found[-1][0], max(found[-1][1], high))
        else:
            found.append((low, high))
    return found


def coarsened(runs: list[Run], limit: int) -> list[Run]:
    """At most `limit` runs covering `runs`: joined across the smallest gaps."""
    if len(runs) <= limit:
        return runs
    gaps = sorted(range(1, len(runs)), key=lambda i: (runs[i][0] - runs[i - 1][1], i))
    joined = set(gaps[: len(runs) - limit])
    found = [runs[0]]
    for i in range(1, len(runs)):
        if i in joined:
            found[-1] = (found[-1][0], runs[i][1])
        else:
            found.append(runs[i])
    return found


def _without(runs: list[Run], cut: list[Run]) -> list[Run]:
    """`runs` minus `cut` (both sorted and disjoint)."""
    found: list[Run] = []
    at = 0
    for low, high in runs:
        while at < len(cut) and cut[at][1] < low:
            at += 1
        k = at
        while low <= high and k < len(cut) and cut[k][0] <= high:
            if cut[k][0] > low:
                found.append((low, cut[k][0] - 1))
            low = max(low, cut[k][1] + 1)
            k += 1
        if low <= high:
            found.append((low, high))
    return found


def _split(runs: list[Run], at: int) -> tuple[list[Run], list[Run]]:
    """Runs below `at`, and from `at` on."""
    below = [(a, min(b, at - 1)) for a, b in runs if a < at]
    above = [(max(a, at), b) for a, b in runs if b >= at]
    return below, above


def find_holes(histories: Sequence[Sequence[Any]], refused: Iterable[Any] = ()) -> Holes:
    """Sequence numbers below the highest signed one that no history holds, that
    compaction cannot have dropped and that no record says are known lost, split by the
    highest watermark stored. `histories` are the records whose MACs are right; the
    numbers of `refused` records (told as refused already) are not holes, and nothing
    else of theirs is believed. Cost: n log n in the records, whatever their numbers."""
    finder = HoleFinder()
    for history in histories:
        finder.add(history)
    return finder.holes(refused_numbers(refused))


def refused_numbers(refused: Iterable[Any]) -> list[int]:
    numbers = (_int(r.get("seq")) for r in refused if isinstance(r, dict))
    return [s for s in numbers if s is not None]


class HoleFinder:
    """`find_holes` one history at a time (a load reads HPOTrials a page at a time)."""

    def __init__(self) -> None:
        self.seqs: set[int] = set()
        self.spans: dict[tuple[Any, Any], Run] = {}
        self.known: list[Run] = []
        self.watermark = 0

    def add(self, history: Iterable[Any]) -> None:
        for record in history:
            seq = _int(record.get("seq")) if isinstance(record, dict) else None
            if seq is None or seq < 0:
                continue
            self.seqs.add(seq)
            self.watermark = max(self.watermark, _int(record.get(DURABLE_FIELD)) or 0)
            self.known.extend(_lost_runs(record.get(LOST_FIELD)))
            if record.get("type") == "Reported":
                key = (record.get("number"), record.get("attempt"))
                low, high = self.spans.get(key, (seq, seq))
                self.spans[key] = (min(low, seq), max(high, seq))

    def holes(self, refused: Iterable[int] = ()) -> Holes:
        """The holes of what was added; `refused`: numbers of records told as refused."""
        if not self.seqs:
            return Holes([], [], [])
        told = [(s, s) for s in refused]
        ordered = sorted(self.seqs)
        pairs = zip([-1, *ordered], ordered, strict=False)
        between = [(a + 1, b - 1) for a, b in pairs if b - a > 1]
        # Strictly inside one attempt's kept reports (compaction's), known lost, or refused.
        inside = [(low + 1, high - 1) for low, high in self.spans.values() if high - low > 1]
        known = merged(self.known)
        holes = _without(between, merged([*inside, *known, *told]))
        missing, lost = _split(holes, self.watermark)
        return Holes(missing, lost, known)


class Watermark:
    """Which records are made but not yet durable, per owner; stamps each new record."""

    def __init__(self) -> None:
        self._by_owner: dict[Owner, list[int]] = defaultdict(list)
        self._pending: Counter[int] = Counter()
        self._heap: list[int] = []
        self._lost: list[Run] = []  # carried until a carrier is durable
        self._carriers: dict[Owner, int] = {}  # this load's carrier of each owner

    def carry(self, runs: Sequence[Run]) -> None:
        """Runs a load found (`Holes.to_carry`): carried in `lost` by the next record
        each owner makes, until one of those is durable."""
        self._lost = list(runs)
        self._carriers = {}

    def stamp(self, seq: int, owner: Owner) -> dict[str, Any]:
        """The fields record `seq` of `owner` carries; it is pending from now on."""
        below = min(self._lowest_pending(seq), seq)
        self._by_owner[owner].append(seq)
        self._pending[seq] += 1
        heapq.heappush(self._heap, seq)
        fields: dict[str, Any] = {DURABLE_FIELD: below}
        if self._lost and owner not in self._carriers:
            self._carriers[owner] = seq
            fields[LOST_FIELD] = [list(run) for run in self._lost]
        return fields

    def written(self, owner: Owner, snapshot: Sequence[dict[str, Any]]) -> None:
        """`owner`'s history as `snapshot` (what the write sent) is durable: its records
        up to the last are (those compaction left out are inside its kept reports)."""
        top = max((s for r in snapshot if (s := _int(r.get("seq"))) is not None), default=-1)
        seqs = self._by_owner.get(owner)
        if seqs:
            done = [s for s in seqs if s <= top]
            self._by_owner[owner] = [s for s in seqs if s > top]
            for seq in done:
                self._pending[seq] -= 1
                if self._pending[seq] <= 0:
                    del self._pending[seq]
        carrier = self._carriers.get(owner)
        if carrier is not None and carrier <= top:
            self.carry([])  # this load's holes are durable in `owner`'s history

    def _lowest_pending(self, default: int) -> int:
        while self._heap and self._heap[0] not in self._pending:
            heapq.heappop(self._heap)
        return self._heap[0] if self._heap else default
