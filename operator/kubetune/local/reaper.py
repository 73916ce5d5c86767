"""A watchman for trial process groups, so that even `kill -9` of kubetune leaves none.

A trial gets SIGKILL when kubetune dies (a parent-death signal), but what the trial
started does not: a parent-death signal is not inherited. This small process (started
by the executor, in its own session so a Ctrl-C meant for kubetune does not reach it)
reads `+PGID` and `-PGID` lines from a pipe only kubetune holds, and `=NAME=VALUE` lines
naming an environment variable every trial of this run has. When the pipe closes,
however kubetune ended, it kills every group still listed, and every process that still
carries the run's variables (a trial's child that left its session), and exits.

Run as `python -m kubetune.local.reaper`; it imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from typing import IO

from kubetune.processes import processes_with_env, signal_all


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups: set[int] = set()
    markers: dict[str, str] = {}
    for line in sys.stdin:
        if line.startswith("="):
            name, _, value = line[1:].rstrip("\n").partition("=")
            markers[name] = value
            continue
        sign, number = line[:1], line[1:].strip()
        if not number.isdigit():
            continue
        if sign == "+":
            groups.add(int(number))
        elif sign == "-":
            groups.discard(int(number))
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    signal_all(processes_with_env(markers), signal.SIGKILL)


class Reaper:
    """kubetune's end of the pipe."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "kubetune.local.reaper"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert self._process.stdin is not None
        self._pipe: IO[bytes] | None = self._process.stdin

    def watch(self, group: int) -> None:
        self._send(f"+{group}\n")

    def forget(self, group: int) -> None:
        self._send(f"-{group}\n")

    def mark(self, name: str, value: str) -> None:
        """Kill, at the end, whatever process still has `name=value` in its environment."""
        self._send(f"={name}={value}\n")

    def _send(self, line: str) -> None:
        if self._pipe is None:
            return
        try:
            self._pipe.write(line.encode())
            self._pipe.flush()
        except OSError:  # it died: the executor still stops groups itself
            self._pipe = None

    def close(self) -> None:
        """Let it go (killing whatever groups are still listed) and wait for it."""
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                self._pipe.close()
            self._pipe = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=5)


if __name__ == "__main__":
    main()
