"""Local mode's durable state: an append-only, fsynced event log per experiment.

Layout of the state directory (default `.kubetune/<experiment>/` beside the YAML):
`events.jsonl` (the history), `spec.json` (the spec the history was made with),
`token.key` (mode 0600: the key per-trial tokens derive from), `logs/` (trial output),
`lock` (held with flock by the run using the directory; it names that run's PID).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Sequence
from pathlib import Path

from kubetune.events import Event, from_record, to_record
from kubetune.spec import ExperimentSpec
from kubetune.tokens import TokenAuthority

# Parts of the spec a history depends on. Changing them under a running history would
# make its decisions meaningless; budgets may change (raising maxTrials continues).
FROZEN_FIELDS = ("objective", "parameters", "algorithm", "scheduler", "warmStart")


class StateError(Exception):
    pass


class StateLock:
    """An exclusive flock on `<directory>/lock` for as long as a run uses the directory.

    The kernel drops it when the process dies, however it dies, so there is never a
    stale lock to clean up; the PID written into the file is only there to name the run
    that holds it.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / "lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        # A run with --fresh moves the directory aside while it holds the lock: a lock
        # taken on the file it had there would guard the old state, not this path's.
        # Locked, the file must still be the one at the path; else take the new one.
        for _ in range(5):
            fd = self._lock_file()
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise StateError(f"{self.path.parent} keeps being moved; is another run using it?")
        with contextlib.suppress(OSError):  # the PID only names the holder (a full disk)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def _lock_file(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise StateError(f"cannot use {self.path.parent}: {error.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateError(
                f"{self.path.parent} is in use by another kubetune run (pid {holder}); "
                f"wait for it to end or stop it first"
            ) from None
        except OSError as error:  # a file system without locks (some network mounts)
            os.close(fd)
            raise StateError(
                f"cannot lock {self.path}: {error.strerror}; put the state on a local disk "
                f"(--state-dir)"
            ) from None
        return fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


# Everything a run writes in its state directory (checkpoints: the default file:// URI).
STATE_ENTRIES = frozenset(
    {"events.jsonl", "spec.json", "spec.tmp", "token.key", "token.key.tmp", "lock", "logs"}
    | {"checkpoints"}
)


def prepare_directory(directory: Path) -> None:
    """Create the state directory, or say in one line why it cannot be one.

    A folder holding anything a run does not write is refused: --fresh moves the whole
    state directory aside, and `--state-dir .` (or ~) would move the user's project."""
    if directory.exists() and not directory.is_dir():
        raise StateError(f"--state-dir {directory} is a file, not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        foreign = sorted(p.name for p in directory.iterdir() if p.name not in STATE_ENTRIES)
    except OSError as error:
        raise StateError(
            f"cannot create the state directory {directory}: {error.strerror}"
        ) from None
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise StateError(
            f"--state-dir {directory} holds files that are not kubetune's ({shown}); "
            f"give a new or empty folder"
        )


class ExperimentState:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.events_path = directory / "events.jsonl"
        self.logs = directory / "logs"
        self._fd: int | None = None
        self._written = 0
        self._unsynced = False
        self._failed: StateError | None = None

    def open(self, spec: ExperimentSpec) -> list[Event]:
        """Create or reopen the state; returns the history so far."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.logs.mkdir(exist_ok=True)
            self._check_spec(spec)
            history = self._load()
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self._fd = os.open(self.events_path, flags, 0o644)
        except OSError as error:
            raise StateError(
                f"cannot use the state directory {self.directory}: {error.strerror}"
            ) from None
        self._written = len(history)
        return history

    def _check_spec(self, spec: ExperimentSpec) -> None:
        path = self.directory / "spec.json"
        current = spec.model_dump(mode="json")
        if path.exists() and self.events_path.exists() and self.events_path.stat().st_size:
            stored = json.loads(path.read_text())
            changed = [f for f in FROZEN_FIELDS if stored.get(f) != current.get(f)]
            if changed:
                raise StateError(
                    f"{self.directory} holds a run of this experiment made with a different "
                    f"{', '.join(changed)}; run with --fresh to start over (the old state is "
                    f"moved aside), or give the experiment another name"
                )
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(current, indent=1, sort_keys=True))
        tmp.replace(path)

    def _load(self) -> list[Event]:
        if not self.events_path.exists():
            return []
        raw = self.events_path.read_bytes()
        lines = raw.split(b"\n")
        # A crash mid-append leaves at most one torn line at the end: drop it.
        complete, tail = lines[:-1], lines[-1]
        if tail:
            with self.events_path.open("r+b") as handle:
                handle.truncate(len(raw) - len(tail))
        history: list[Event] = []
        for number, line in enumerate(complete, start=1):
            if not line.strip():
                continue
            try:
                history.append(from_record(json.loads(line)))
            except (ValueError, TypeError, KeyError) as error:
                raise StateError(f"{self.events_path}:{number}: corrupt event ({error})") from None
        return history

    @property
    def written(self) -> int:
        """How many of the history's events are on disk."""
        return self._written

    def append(self, history: Sequence[Event], sync: bool = True) -> None:
        """Write the events of `history` not written yet; durably (fsync) when `sync`.

        Without `sync` they are still handed to the kernel, so a killed process loses
        nothing: only a machine crash could, and only events no decision rests on.
        Raises StateError when the disk refuses (full, read-only, failing), and again on
        every later call: what is on disk is then a prefix of the history (at most its
        last line torn, which the next run drops), so nothing more may be written.
        """
        assert self._fd is not None, "open() first"
        if self._failed is not None:
            raise self._failed
        try:
            if self._written < len(history):
                lines = (to_record(event) for event in history[self._written :])
                data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in lines)
                _write_all(self._fd, data.encode())
                self._written = len(history)
                self._unsynced = True
            if sync and self._unsynced:
                os.fsync(self._fd)
                self._unsynced = False
        except OSError as error:
            self._failed = StateError(f"cannot write {self.events_path}: {error.strerror}")
            raise self._failed from None

    def tokens(self, scope: str) -> TokenAuthority:
        path = self.directory / "token.key"
        try:
            if not path.exists():
                # Written aside and renamed: a key cut short by a full disk would make
                # every later run's tokens guessable.
                tmp = path.with_name("token.key.tmp")
                tmp.unlink(missing_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(TokenAuthority.new_key())
                    handle.flush()
                    os.fsync(handle.fileno())
                tmp.replace(path)
            return TokenAuthority(path.read_bytes(), scope)
        except OSError as error:
            raise StateError(f"cannot write {path}: {error.strerror}") from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
