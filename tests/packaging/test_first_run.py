"""The README's first command, run as a new user runs it: verbatim (read from the
README, so the two cannot diverge), with bash, in a clean copy of the repository, where
`scripts/bootstrap` makes a fresh .venv with the default extra only. It must exit 0,
print no traceback and end with a best trial.

This is the check the `dev` virtualenv cannot make: the test suite's own venv has every
extra, so a command that needs one the README does not install passes every other
test (f13db72's `kubetune run` imported kopf, the operator extra, and failed here)."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.packaging.sandbox import REPO, clean_clone, clean_env

# Installing torch into a fresh venv and 24 trials on two cores.
TIMEOUT_S = 2400


def readme_first_command(readme: Path = REPO / "README.md") -> str:
    """The first line of the README's first ```sh block."""
    found = re.search(r"^```sh\n(.*?)^```", readme.read_text(), re.MULTILINE | re.DOTALL)
    assert found, "README.md has no ```sh block"
    return found.group(1).splitlines()[0]


def run_first_command(clone: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        ["bash", "-c", readme_first_command(clone / "README.md")],
        cwd=clone,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT_S,
    )
    return done, time.monotonic() - started


def assert_a_new_user_succeeds(done: subprocess.CompletedProcess[str]) -> None:
    tail = done.stdout[-6000:]
    assert done.returncode == 0, f"exit {done.returncode}:\n{tail}"
    assert "Traceback" not in done.stdout, tail
    assert re.search(r"^best trial \S+: val_loss=", done.stdout, re.MULTILINE), tail


def test_the_readme_first_command_is_the_one_this_test_runs() -> None:
    command = readme_first_command()
    assert command.startswith("./scripts/bootstrap && .venv/bin/kubetune run "), command
    assert "trial_image/examples/digits-asha.yaml" in command


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 60)
def test_the_readme_first_command_works_on_a_clean_clone(tmp_path: Path) -> None:
    clone = clean_clone(tmp_path / "kubetune")
    assert not (clone / ".venv").exists()
    done, seconds = run_first_command(clone)
    installed = re.search(r"^bootstrap: done in \d+ s$", done.stdout, re.MULTILINE)
    print(f"README's first command: {seconds:.0f} s ({installed and installed.group(0)})")
    assert_a_new_user_succeeds(done)
    # bootstrap's default: the torch extra and nothing else.
    stamps = [p.name for p in (clone / ".venv").glob(".installed-*")]
    assert len(stamps) == 1 and stamps[0].startswith(".installed-torch-"), stamps
    kopf = subprocess.run(
        [clone / ".venv" / "bin" / "python", "-c", "import kopf"], capture_output=True, check=False
    )
    assert kopf.returncode != 0, "the operator extra must not be needed, so it is not installed"
