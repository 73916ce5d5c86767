"""save_checkpoint() / load_checkpoint() on file:// URIs: layout, rotation, atomicity."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import kubetune_trial as kt
from kubetune_trial import storage


@pytest.fixture
def ckpt_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    directory = tmp_path / "ckpt" / "digits-mlp" / "digits-mlp-7"
    monkeypatch.setenv("KUBETUNE_CHECKPOINT_URI", directory.as_uri())
    return directory


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def test_nothing_to_load(ckpt_dir: Path) -> None:
    assert kt.load_checkpoint() is None  # the directory does not even exist yet
    ckpt_dir.mkdir(parents=True)
    assert kt.load_checkpoint() is None


def test_nothing_to_load_without_a_uri() -> None:
    assert kt.load_checkpoint() is None


def test_save_without_a_uri_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="KUBETUNE_CHECKPOINT_URI is not set"):
        kt.save_checkpoint(b"x", 1)


def test_round_trip_and_layout(ckpt_dir: Path) -> None:
    uri = kt.save_checkpoint(b"\x00model-state\xff", 3)
    assert uri == (ckpt_dir / "step-00000003.ckpt").as_uri()
    assert listing(ckpt_dir) == ["latest", "step-00000003.ckpt"]
    assert (ckpt_dir / "latest").read_text() == "step-00000003.ckpt"
    assert kt.load_checkpoint() == (3, b"\x00model-state\xff")


def test_bytearray_and_memoryview_are_accepted(ckpt_dir: Path) -> None:
    kt.save_checkpoint(bytearray(b"abc"), 1)
    kt.save_checkpoint(memoryview(b"def"), 2)
    assert kt.load_checkpoint() == (2, b"def")


def test_keeps_the_newest_two_by_default(ckpt_dir: Path) -> None:
    for step in range(1, 6):
        kt.save_checkpoint(f"state {step}".encode(), step)
    assert listing(ckpt_dir) == ["latest", "step-00000004.ckpt", "step-00000005.ckpt"]
    assert kt.load_checkpoint() == (5, b"state 5")


def test_keep_is_configurable(ckpt_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBETUNE_CHECKPOINT_KEEP", "3")
    for step in (2, 4, 6, 8):
        kt.save_checkpoint(b"s", step)
    assert listing(ckpt_dir) == ["latest", *(f"step-0000000{s}.ckpt" for s in (4, 6, 8))]
    kt.save_checkpoint(b"s", 9, keep=1)
    assert listing(ckpt_dir) == ["latest", "step-00000009.ckpt"]


def test_saving_the_same_step_again_replaces_it(ckpt_dir: Path) -> None:
    kt.save_checkpoint(b"first", 3)
    kt.save_checkpoint(b"second", 3)
    assert kt.load_checkpoint() == (3, b"second")


def test_an_earlier_step_supersedes_a_later_timeline(ckpt_dir: Path) -> None:
    for step in (4, 5, 6):
        kt.save_checkpoint(b"old run", step)
    kt.save_checkpoint(b"rerun", 2)  # the trial was re-run from scratch
    assert listing(ckpt_dir) == ["latest", "step-00000002.ckpt"]
    assert kt.load_checkpoint() == (2, b"rerun")


def test_steps_past_eight_digits_still_order_numerically(ckpt_dir: Path) -> None:
    kt.save_checkpoint(b"big", 123_456_789)
    kt.save_checkpoint(b"bigger", 999_999_999)
    assert kt.load_checkpoint() == (999_999_999, b"bigger")
    assert "step-999999999.ckpt" in listing(ckpt_dir)


def test_crash_before_latest_keeps_the_previous_checkpoint(
    ckpt_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kt.save_checkpoint(b"good", 1)
    real_replace = os.replace

    def crash_on_latest(src: str, dst: str) -> None:
        if os.path.basename(dst) == "latest":
            raise OSError("node lost power")
        real_replace(src, dst)

    with monkeypatch.context() as patch, pytest.raises(OSError, match="node lost power"):
        patch.setattr(storage.os, "replace", crash_on_latest)
        kt.save_checkpoint(b"new", 2)
    assert kt.load_checkpoint() == (1, b"good")
    # No temporary file is left behind to be mistaken for anything.
    assert listing(ckpt_dir) == ["latest", "step-00000001.ckpt", "step-00000002.ckpt"]


def test_crash_while_writing_leaves_no_partial_checkpoint(
    ckpt_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kt.save_checkpoint(b"good", 1)

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch, pytest.raises(OSError, match="No space left"):
        patch.setattr(storage.os, "fsync", full_disk)
        kt.save_checkpoint(b"x" * 100_000, 2)
    assert listing(ckpt_dir) == ["latest", "step-00000001.ckpt"]
    assert kt.load_checkpoint() == (1, b"good")


def test_latest_naming_a_missing_checkpoint_falls_back(
    ckpt_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kt.save_checkpoint(b"three", 3)
    kt.save_checkpoint(b"four", 4)
    (ckpt_dir / "step-00000004.ckpt").unlink()
    assert kt.load_checkpoint() == (3, b"three")
    assert "missing" in caplog.text


def test_latest_is_never_a_path_outside_the_directory(ckpt_dir: Path, tmp_path: Path) -> None:
    kt.save_checkpoint(b"mine", 1)
    (tmp_path / "secret").write_bytes(b"not a checkpoint")
    (ckpt_dir / "latest").write_text("../../../secret")
    assert kt.load_checkpoint() == (1, b"mine")


def test_uri_argument_overrides_the_environment(ckpt_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    kt.save_checkpoint(b"here", 1, uri=f"file://localhost{elsewhere}")
    kt.save_checkpoint(b"there", 1, uri=str(elsewhere / "plain"))
    assert kt.load_checkpoint() is None
    assert kt.load_checkpoint(uri=elsewhere.as_uri()) == (1, b"here")
    assert kt.load_checkpoint(uri=str(elsewhere / "plain")) == (1, b"there")


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: kt.save_checkpoint("text", 1), TypeError, "must be bytes"),  # type: ignore[arg-type]
        (lambda: kt.save_checkpoint(b"x", -1), ValueError, "non-negative"),
        (lambda: kt.save_checkpoint(b"x", 1, keep=0), ValueError, "keep"),
        (lambda: kt.save_checkpoint(b"x", 1, uri="gs://b/p"), ValueError, "scheme 'gs'"),
        (lambda: kt.save_checkpoint(b"x", 1, uri="file://host/p"), ValueError, "must be local"),
    ],
)
def test_bad_arguments(ckpt_dir: Path, call, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call()
    assert not ckpt_dir.exists()
