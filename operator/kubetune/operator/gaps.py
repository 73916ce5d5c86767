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
may be a crash's loss and is not told. Either way the loaded operator carries its holes
in `lost` (as [first, last] runs) on the first record each owner makes next, so that no
later load tells them again: a record durable after a load means its owner's carrier is
(an owner's history is written whole, in order), and compaction keeps carriers. Holes
compaction makes (reports strictly between the first and last kept report of one
attempt) are never holes. Records without `durable`, written before it existed, raise
no watermark: holes among them are not told.

Not seen: records deleted above the highest watermark (the last records written).
"""

from __future__ import annotations

import bisect
import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

DURABLE_FIELD = "durable"
LOST_FIELD = "lost"
# Runs of lost numbers one record carries; more (a mass deletion) are told again at
# the next load rather than make one record too big to write.
MAX_LOST_RUNS = 256

Owner = int | None  # a trial's number, or None: the experiment


@dataclass(frozen=True)
class Holes:
    missing: list[int]  # were durable once: deleted
    lost: list[int]  # may be a killed operator's unwritten records


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _lost_runs(value: Any) -> Iterable[tuple[int, int]]:
    for run in value if isinstance(value, list) else ():
        if isinstance(run, list) and len(run) == 2:
            first, last = _int(run[0]), _int(run[1])
            if first is not None and last is not None and first <= last:
                yield first, last


def runs(numbers: Iterable[int]) -> list[list[int]]:
    """Sorted numbers as [first, last] runs of consecutive ones."""
    found: list[list[int]] = []
    for number in sorted(set(numbers)):
        if found and found[-1][1] == number - 1:
            found[-1][1] = number
        else:
            found.append([number, number])
    return found


def find_holes(histories: Sequence[Sequence[Any]], refused: Iterable[Any] = ()) -> Holes:
    """Sequence numbers below the highest stored that no history holds, that compaction
    cannot have dropped and that no record says are known lost, split by the highest
    watermark stored. `histories` are the records whose MACs are right; the numbers of
    `refused` records (told as refused already) are not holes, and nothing else of
    theirs is believed."""
    numbers = (_int(r.get("seq")) for r in refused if isinstance(r, dict))
    told: set[int] = {s for s in numbers if s is not None}
    seqs: set[int] = set()
    spans: dict[tuple[Any, Any], tuple[int, int]] = {}
    excused: list[tuple[int, int]] = []  # closed intervals
    watermark = 0
    for history in histories:
        for record in history:
            seq = _int(record.get("seq")) if isinstance(record, dict) else None
            if seq is None:
                continue
            seqs.add(seq)
            watermark = max(watermark, _int(record.get(DURABLE_FIELD)) or 0)
            excused.extend(_lost_runs(record.get(LOST_FIELD)))
            if record.get("type") == "Reported":
                key = (record.get("number"), record.get("attempt"))
                low, high = spans.get(key, (seq, seq))
                spans[key] = (min(low, seq), max(high, seq))
    if not seqs:
        return Holes([], [])
    # Strictly inside one attempt's kept reports (compaction's), or known lost.
    inside = [(low + 1, high - 1) for low, high in spans.values() if high - low > 1]
    covered = _merged(inside + excused)
    starts = [low for low, _ in covered]
    holes = []
    # Up to the highest signed number only: a refused record's could be anything.
    for seq in range(max(seqs)):
        if seq in seqs or seq in told:
            continue
        at = bisect.bisect_right(starts, seq) - 1
        if at < 0 or seq > covered[at][1]:
            holes.append(seq)
    return Holes([s for s in holes if s < watermark], [s for s in holes if s >= watermark])


def _merged(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Closed intervals as sorted, disjoint ones."""
    merged: list[tuple[int, int]] = []
    for low, high in sorted(intervals):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


class Watermark:
    """Which records are made but not yet durable, per owner; stamps each new record."""

    def __init__(self) -> None:
        self._by_owner: dict[Owner, list[int]] = defaultdict(list)
        self._pending: Counter[int] = Counter()
        self._heap: list[int] = []
        self._lost: list[list[int]] = []  # runs carried until a carrier is durable
        self._carriers: set[Owner] = set()

    def carry(self, holes: Iterable[int]) -> None:
        """Holes a load found: carried in `lost` by the next record each owner makes,
        until one of those is durable (one per owner: compaction keeps them all)."""
        self._lost = runs(holes)[:MAX_LOST_RUNS]
        self._carriers = set()

    def stamp(self, seq: int, owner: Owner) -> dict[str, Any]:
        """The fields record `seq` of `owner` carries; it is pending from now on."""
        below = min(self._lowest_pending(seq), seq)
        self._by_owner[owner].append(seq)
        self._pending[seq] += 1
        heapq.heappush(self._heap, seq)
        fields: dict[str, Any] = {DURABLE_FIELD: below}
        if self._lost and owner not in self._carriers:
            self._carriers.add(owner)
            fields[LOST_FIELD] = [list(run) for run in self._lost]
        return fields

    def written(self, owner: Owner, snapshot: Sequence[dict[str, Any]]) -> None:
        """`owner`'s history as `snapshot` is durable: its records up to the last are
        (those compaction left out of it are inside its kept reports)."""
        top = max((s for r in snapshot if (s := _int(r.get("seq"))) is not None), default=-1)
        seqs = self._by_owner.get(owner)
        if seqs:
            done = [s for s in seqs if s <= top]
            self._by_owner[owner] = [s for s in seqs if s > top]
            for seq in done:
                self._pending[seq] -= 1
                if self._pending[seq] <= 0:
                    del self._pending[seq]
        if self._lost and any(LOST_FIELD in r for r in snapshot):
            self.carry(())

    def _lowest_pending(self, default: int) -> int:
        while self._heap and self._heap[0] not in self._pending:
            heapq.heappop(self._heap)
        return self._heap[0] if self._heap else default
