"""The engine's history as held in memory: append-only, indexed from the experiment's
first event, and able to let go of the events every reader has taken.

The engine is a fold over its history, so it never reads an event twice; the shells
read each new event once (to store it, to count it) by its position. Once they have,
an event in memory is dead weight: the Reported events were most of what the engine
held per trial (about 10 of its 20 KB at bench/scale.py's shape), and a 10,000-trial
experiment keeps 300,000 of them. `release(before)` drops the events before `before`;
positions keep counting from the first event, so a reader's cursor stays valid, and a
reader who asks for an event let go gets `ReleasedEvents`, never another event.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, overload

from kubetune.events import Event


class ReleasedEvents(LookupError):
    """An event before the log's first held one was asked for."""


class EventLog(Sequence[Event]):
    # Iterated by position (Sequence's own __iter__): an iterator whose next event is let
    # go meanwhile raises ReleasedEvents rather than skip to a later one.
    def __init__(self, events: Iterable[Event] = ()) -> None:
        self._events: list[Event] = list(events)
        self._first = 0  # the position of self._events[0]

    @property
    def first_held(self) -> int:
        return self._first

    def append(self, event: Event) -> None:
        self._events.append(event)

    def extend(self, events: Iterable[Event]) -> None:
        self._events.extend(events)

    def __iadd__(self, events: Iterable[Event]) -> EventLog:
        self.extend(events)
        return self

    def release(self, before: int) -> None:
        """Let go of the events before position `before` (every reader has them)."""
        drop = min(before, len(self)) - self._first
        if drop > 0:
            del self._events[:drop]
            self._first += drop

    def __len__(self) -> int:
        return self._first + len(self._events)

    @overload
    def __getitem__(self, index: int) -> Event: ...

    @overload
    def __getitem__(self, index: slice) -> list[Event]: ...

    def __getitem__(self, index: int | slice) -> Event | list[Event]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError("an event log is read forward, one event after another")
            self._check(start if start < stop else self._first)
            return self._events[start - self._first : stop - self._first]
        position = index + len(self) if index < 0 else index
        if not 0 <= position < len(self):
            raise IndexError("event log index out of range")
        self._check(position)
        return self._events[position - self._first]

    def _check(self, position: int) -> None:
        if position < self._first:
            raise ReleasedEvents(
                f"event {position} was let go (events from {self._first} on are held)"
            )

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, EventLog):
            return self._first == other._first and self._events == other._events
        if isinstance(other, list):
            return self._first == 0 and self._events == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, as a list

    def __repr__(self) -> str:
        return f"EventLog({len(self)} events, from {self._first} held)"
