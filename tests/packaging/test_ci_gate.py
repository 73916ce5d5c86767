"""CI=true means no silent skips: a missing prerequisite fails (tests/prereq.py) and any
other skip fails the run (tests/ci_gate.py). Checked on a throwaway test file run by a
real pytest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SAMPLE = """
import pytest
from tests.prereq import require, require_module

def test_runs():
    pass

def test_needs_a_binary():
    require(False, "frobnicator is not installed")

def test_needs_a_module():
    require_module("no_such_module_kubetune", "the no-such extra")

def test_skips_by_hand():
    pytest.skip("someone's shortcut")
"""


def run_sample(tmp_path: Path, ci: str, sample: str = SAMPLE) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(sample)
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "tests.ci_gate"]
    command += ["-p", "no:cacheprovider", "--rootdir", str(tmp_path), "-c", os.devnull]
    return subprocess.run(
        [*command, "test_sample.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "CI": ci, "PYTHONPATH": str(REPO)},
        timeout=120,
    )


def test_outside_ci_missing_prerequisites_skip(tmp_path: Path) -> None:
    done = run_sample(tmp_path, "")
    assert done.returncode == 0, done.stdout
    assert "1 passed, 3 skipped" in done.stdout
    assert "frobnicator is not installed" in done.stdout


@pytest.mark.parametrize("ci", ["true", "TRUE"])
def test_in_ci_every_skip_fails(tmp_path: Path, ci: str) -> None:
    done = run_sample(tmp_path, ci)
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout
    assert "2 failed, 1 passed, 1 skipped" in done.stdout
    assert "missing prerequisite (CI=true): frobnicator is not installed" in done.stdout
    assert "CI=true: 1 test(s) skipped, which fails the run" in done.stdout


def test_in_ci_a_run_whose_only_flaw_is_a_skip_fails(tmp_path: Path) -> None:
    done = run_sample(
        tmp_path, "true", "import pytest\n\ndef test_a():\n    pytest.skip('later')\n"
    )
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout
    assert "1 skipped" in done.stdout
