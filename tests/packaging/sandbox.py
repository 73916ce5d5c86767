"""A new user's machine, as near as a test gets: the repository's tracked files copied
into an empty folder (what a clean clone holds, with this checkout's uncommitted edits
to them), fresh virtualenvs made by the machine's own python3, and an environment
without this test run's virtualenv, PYTHONPATH or editable kubetune.

pip's cache (~/.cache/pip) is shared on purpose: the tests check what gets installed,
not the network, and a warm cache keeps them to minutes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from tests.prereq import require

REPO = Path(__file__).resolve().parents[2]
# Variables that would let a sandboxed command see this test run's Python setup.
_LEAKY = (
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
    "CONDA_PREFIX",
)


def tracked_files(root: Path = REPO) -> list[str]:
    """The files `git ls-files` lists under `root` that exist in the working tree."""
    require(shutil.which("git") and (REPO / ".git").exists(), "git and a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", "."],
        cwd=root,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (root / name).is_file()]


def copy_files(names: Iterable[str], source: Path, dest: Path) -> Path:
    """Copies `names` (relative to `source`) into `dest`, modes kept (scripts stay executable)."""
    for name in names:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, target)
    return dest


def clean_clone(dest: Path) -> Path:
    """What `git clone` of this checkout would hold, uncommitted edits included."""
    return copy_files(tracked_files(), REPO, dest)


def host_python() -> str:
    """The python3 a new user's shell finds: this run's virtualenv taken off PATH."""
    found = shutil.which("python3", path=clean_env()["PATH"])
    require(found, "python3 on PATH (outside the test virtualenv)")
    assert found is not None
    return found


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ without what points at this run's virtualenv, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY}
    venv_bins = {str(Path(sys.prefix) / "bin"), str(Path(sys.executable).parent)}
    env["PATH"] = os.pathsep.join(
        entry for entry in env.get("PATH", "").split(os.pathsep) if entry not in venv_bins
    )
    env["PYTHONNOUSERSITE"] = "1"  # ~/.local's packages are not a clean machine's
    return {**env, **(extra or {})}


def new_venv(path: Path) -> Path:
    """A fresh virtualenv (no system site-packages) made by the host's python3."""
    checked([host_python(), "-m", "venv", str(path)], timeout=300)
    return path / "bin"


def checked(
    command: list[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 900,
    expect: int = 0,
) -> subprocess.CompletedProcess[str]:
    """Runs `command` (stdout and stderr together) and asserts its exit status, showing
    the output's tail when it is not the one expected."""
    done = subprocess.run(
        command,
        cwd=cwd,
        env=dict(env) if env is not None else clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == expect, (
        f"{command} exited {done.returncode}, not {expect}:\n{done.stdout[-6000:]}"
    )
    return done
