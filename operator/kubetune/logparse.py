"""Reports from `name=value` log lines, for trial scripts that do not use the SDK."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_PAIR = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*)=(\S+)$")

# The report endpoint's bounds (ingest.py), so a log line cannot report what the SDK may
# not: a step of 1e300 is a 301-digit resource in every event, output and summary line,
# and a line of thousands of pairs an event as large.
MAX_STEP = 10**9
MAX_METRICS = 64


def parse_metrics_line(
    line: str, resource: str | None, count: int
) -> tuple[int, dict[str, float]] | None:
    """(step, metrics) when the whole line is `name=value` pairs, else None.

    The step is the value of the resource (`epoch=3`) when the line carries it, else
    `count`, the number of such lines so far including this one.
    """
    parts = line.split()
    if not parts or len(parts) > MAX_METRICS + 1:  # the resource may come on top
        return None
    metrics: dict[str, float] = {}
    for part in parts:
        match = _PAIR.match(part)
        if match is None:
            return None
        try:
            metrics[match.group(1)] = float(match.group(2))
        except ValueError:
            return None
    step = count
    if resource is not None and resource in metrics:
        value = metrics.pop(resource)
        if not (math.isfinite(value) and 0 <= value <= MAX_STEP and value.is_integer()):
            return None
        step = int(value)
    if len(metrics) > MAX_METRICS:
        return None
    return step, metrics


# Longest line kept, in bytes. A metric line is short; anything longer is output (a
# progress bar redrawn without a newline, a dumped tensor) and only its start is kept.
MAX_LINE_BYTES = 64 * 1024

_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class Line:
    data: bytes  # the line without its end, at most the splitter's max_bytes
    end: bytes  # b"\n", b"\r\n", b"\r", or b"" for a last line the stream ended without
    dropped: int = 0  # bytes past max_bytes that were not kept


class LineSplitter:
    """Splits a byte stream fed in chunks into lines ending at `\\n`, `\\r\\n` or `\\r`.

    `\\r` ends a line because progress bars (tqdm) redraw with it and never print a
    newline: read by newlines, a long training run is one endless line. Memory stays
    bounded by `max_bytes` whatever the stream holds.
    """

    def __init__(self, max_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._partial = bytearray()
        self._dropped = 0
        self._after_cr = False  # the last chunk ended with \r: a leading \n belongs to it

    def feed(self, chunk: bytes) -> list[Line]:
        lines: list[Line] = []
        start = 0
        if self._after_cr and chunk.startswith(b"\n"):
            start = 1  # the \n of a \r\n split across chunks: that line has ended already
        self._after_cr = False
        for match in _LINE_END.finditer(chunk, start):
            self._keep(chunk, start, match.start())
            end = match.group()
            if end == b"\r" and match.end() == len(chunk):
                self._after_cr = True
            lines.append(Line(bytes(self._partial), end, self._dropped))
            self._partial.clear()
            self._dropped = 0
            start = match.end()
        self._keep(chunk, start, len(chunk))
        return lines

    def close(self) -> list[Line]:
        """The unterminated last line, if any."""
        if not self._partial and not self._dropped:
            return []
        line = Line(bytes(self._partial), b"", self._dropped)
        self._partial.clear()
        self._dropped = 0
        return [line]

    def _keep(self, chunk: bytes, start: int, stop: int) -> None:
        room = self.max_bytes - len(self._partial)
        take = min(room, stop - start)
        if take > 0:
            self._partial += chunk[start : start + take]
        self._dropped += (stop - start) - max(take, 0)


def for_log(line: Line) -> bytes:
    """The bytes a trial log keeps of a line: the line, and a note where it was cut."""
    if not line.dropped:
        return line.data + line.end
    note = (
        f"\n[kubetune: this line was {len(line.data) + line.dropped} bytes long; "
        f"only its first {len(line.data)} bytes are kept]\n"
    )
    return line.data + note.encode()
