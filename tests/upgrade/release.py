"""The previous release's code, checked out beside the working tree.

The release is the tag `v0.1.0` when the clone has it, else its commit (tags may not
travel with a clone; the commit is in main's history). A `git worktree` of it is made in
a temporary directory and removed afterwards.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RELEASE_TAG = "v0.1.0"
RELEASE_COMMIT = "f13db727a3c79951978c0278658db6fcf14d0406"


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False
    )


def release_commit() -> str:
    """The commit of the last release: the tag if present, else the recorded commit."""
    tagged = _git("rev-parse", "--verify", "--quiet", f"{RELEASE_TAG}^{{commit}}")
    if tagged.returncode == 0:
        return tagged.stdout.strip()
    found = _git("cat-file", "-e", f"{RELEASE_COMMIT}^{{commit}}")
    if found.returncode != 0:
        raise RuntimeError(
            f"neither the tag {RELEASE_TAG} nor the commit {RELEASE_COMMIT} is in {REPO} "
            "(a shallow clone? fetch with --unshallow)"
        )
    return RELEASE_COMMIT


@contextmanager
def release_worktree(parent: Path) -> Iterator[Path]:
    """A detached worktree of the release under `parent`, removed afterwards."""
    path = parent / "release"
    made = _git("worktree", "add", "--detach", str(path), release_commit())
    if made.returncode != 0:
        raise RuntimeError(f"git worktree add failed: {made.stderr.strip()}")
    try:
        yield path
    finally:
        _git("worktree", "remove", "--force", str(path))
        _git("worktree", "prune")
