"""A trial's history records held compressed while nothing is appended to them.

The operator keeps every trial's signed records (a rewrite of its status, a put-back
after a foreign write, a resumed trial all need them), and most trials are done: a
record as a Python dict takes about 2 KB, seven times its JSON, and at 2,000 trials the
records were most of the operator's memory (bench/scale.py). Held as one zlib'd JSON
array they take about 60 bytes each; they are unpacked for the few moments a write or a
new record needs them (`HistoryRecords`).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

Record = dict[str, Any]


class PackedRecords(Sequence[Record]):
    """An immutable sequence of records; each access decodes them all (callers take
    `unpack()` once rather than indexing in a loop)."""

    __slots__ = ("_blob", "_count")

    def __init__(self, records: Sequence[Record]) -> None:
        text = json.dumps(list(records), separators=(",", ":"), allow_nan=True)
        self._blob = zlib.compress(text.encode(), 1)
        self._count = len(records)

    def unpack(self) -> list[Record]:
        """A new list of new dicts, equal to the records packed."""
        records: list[Record] = json.loads(zlib.decompress(self._blob))
        return records

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Record]:
        return iter(self.unpack())

    def __getitem__(self, index: Any) -> Any:
        return self.unpack()[index]

    @property
    def nbytes(self) -> int:
        return len(self._blob)


def packed(records: Sequence[Record]) -> PackedRecords:
    return records if isinstance(records, PackedRecords) else PackedRecords(records)


def mutable(records: Sequence[Record]) -> list[Record]:
    """`records` as a list one may append to (the same list when it is one)."""
    if isinstance(records, list):
        return records
    if isinstance(records, PackedRecords):
        return records.unpack()
    return list(records)
