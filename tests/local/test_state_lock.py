"""The state directory's lock and --fresh under races (what two runs at once can do)."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

import pytest

from kubetune.local import runner, state
from kubetune.local.runner import RunOptions
from kubetune.local.state import StateError, StateLock


def test_a_lock_taken_on_a_directory_moved_meanwhile_is_taken_on_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run B opens `lock`; run A (--fresh) moves the directory aside and releases; B's
    flock then succeeds on the old file. B must not go on to use the new directory."""
    directory = tmp_path / "state"
    directory.mkdir()
    real_flock = fcntl.flock
    moved: list[bool] = []

    def flock_after_a_move(fd: int, operation: int) -> None:
        if not moved:
            moved.append(True)
            directory.rename(tmp_path / "state.old")  # what the other run's --fresh does
            directory.mkdir()
        real_flock(fd, operation)

    monkeypatch.setattr(state.fcntl, "flock", flock_after_a_move)
    first = StateLock(directory)
    first.acquire()
    monkeypatch.setattr(state.fcntl, "flock", real_flock)
    try:
        with pytest.raises(StateError, match="in use by another kubetune run"):
            StateLock(directory).acquire()
    finally:
        first.release()


def test_fresh_twice_in_one_second_keeps_both_old_states_side_by_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner.time, "time", lambda: 1_700_000_000.0)
    directory = tmp_path / "state"
    for run in ("first", "second"):
        directory.mkdir(exist_ok=True)
        (directory / "events.jsonl").write_text(run)
        lock = runner._lock_state(RunOptions(state_dir=directory, fresh=True))
        lock.release()
    aside = sorted(p.name for p in tmp_path.iterdir() if p.name != "state")
    assert aside == ["state.old-1700000000", "state.old-1700000000-2"]
    kept = [(tmp_path / name / "events.jsonl").read_text() for name in aside]
    assert kept == ["first", "second"]


def test_a_file_system_without_locks_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(state.fcntl, "flock", no_locks)
    with pytest.raises(StateError, match=r"cannot lock .*lock: No locks available"):
        StateLock(tmp_path).acquire()
