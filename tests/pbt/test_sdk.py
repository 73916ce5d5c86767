"""What the trial SDK tells a PBT member: when to checkpoint, where it starts from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import kubetune_trial as kt


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("KUBETUNE_"):
            monkeypatch.delenv(name)


def member(monkeypatch: pytest.MonkeyPatch, root: Path, trial: str, **extra: str) -> Path:
    directory = root / trial
    monkeypatch.setenv("KUBETUNE_CHECKPOINT_URI", directory.as_uri())
    monkeypatch.setenv("KUBETUNE_CHECKPOINT_INTERVAL", "4")
    for name, value in extra.items():
        monkeypatch.setenv(f"KUBETUNE_{name}", value)
    return directory


def test_checkpoint_due_at_multiples_of_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not kt.checkpoint_due(4)  # no interval: not a PBT member
    monkeypatch.setenv("KUBETUNE_CHECKPOINT_INTERVAL", "4")
    assert [s for s in range(1, 13) if kt.checkpoint_due(s)] == [4, 8, 12]


def test_a_member_never_deletes_a_checkpoint_another_may_start_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Ray Tune #9036: the donor's checkpoint was deleted before the exploiting trial
    # loaded it. Here the donor keeps every interval checkpoint (kubetune's default keep
    # of 2 would have deleted step 4 at step 12).
    donor = member(monkeypatch, tmp_path, "exp-0")
    for step in (4, 8, 12):
        kt.save_checkpoint(f"exp-0@{step}".encode(), step)
    assert sorted(os.listdir(donor)) == [
        "latest",
        "step-00000004.ckpt",
        "step-00000008.ckpt",
        "step-00000012.ckpt",
    ]


def test_an_exploiting_member_starts_from_the_pinned_step_not_the_latest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    member(monkeypatch, tmp_path, "exp-0")
    for step in (4, 8, 12):
        kt.save_checkpoint(f"exp-0@{step}".encode(), step)
    # Ray Tune #28196: the exploiting trial loaded a checkpoint other than the donor's at
    # the exploit step. exp-6 replaces a member from exp-0's checkpoint at step 8 (exp-0
    # went on to 12 meanwhile).
    member(
        monkeypatch,
        tmp_path,
        "exp-6",
        CHECKPOINT_FROM=(tmp_path / "exp-0").as_uri(),
        CHECKPOINT_FROM_STEP="8",
    )
    info = kt.trial_info()
    assert (info.checkpoint_from_step, info.resume) == (8, False)
    assert kt.start_checkpoint() == (8, b"exp-0@8")
    # Once it has its own, an interrupted attempt resumes from its own state and step.
    kt.save_checkpoint(b"exp-6@12", 12)
    monkeypatch.setenv("KUBETUNE_RESUME", "1")
    assert kt.start_checkpoint() == (12, b"exp-6@12")


def test_a_missing_pinned_checkpoint_is_an_error_not_a_fresh_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    member(monkeypatch, tmp_path, "exp-0")
    kt.save_checkpoint(b"exp-0@12", 12)
    member(
        monkeypatch,
        tmp_path,
        "exp-6",
        CHECKPOINT_FROM=(tmp_path / "exp-0").as_uri(),
        CHECKPOINT_FROM_STEP="8",
    )
    with pytest.raises(kt.PinnedCheckpointMissing, match="step 8"):
        kt.start_checkpoint()


def test_a_fresh_member_starts_from_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    member(monkeypatch, tmp_path, "exp-1")
    assert kt.start_checkpoint() is None


def test_a_report_at_an_interval_step_without_its_checkpoint_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A script that never checkpoints (or saves after reporting) would have its members
    # replaced by copies failing with PinnedCheckpointMissing; the report is refused,
    # before anything is sent, with the fix in the message.
    from kubetune_trial import interval

    monkeypatch.setattr(interval, "_saved", set())
    member(monkeypatch, tmp_path, "exp-0", MAX_RESOURCE="12")
    monkeypatch.setenv("KUBETUNE_ENDPOINT", "http://127.0.0.1:9")  # nothing listens
    monkeypatch.setenv("KUBETUNE_TOKEN", "t")
    monkeypatch.setenv("KUBETUNE_TRIAL", "exp-0")
    with pytest.raises(interval.CheckpointNotSaved, match=r"step 4.*kt.save_checkpoint"):
        kt.report(4, loss=1.0)
    kt.save_checkpoint(b"state", 4)
    interval.check_report(4)  # saved: let through
    interval.check_report(5)  # not an interval step
    interval.check_report(12)  # the last step: no one starts from it
    monkeypatch.delenv("KUBETUNE_CHECKPOINT_INTERVAL")
    interval.check_report(8)  # not a PBT member
