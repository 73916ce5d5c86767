"""`kubetune run` as a user runs it, from a test: the experiment written to a file, the CLI
run in a subprocess of this interpreter, and the results file it writes read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KUBETUNE = [sys.executable, "-m", "kubetune.cli"]


def output_tail(process: subprocess.CompletedProcess[str]) -> str:
    """The ends of stdout and stderr, for an assertion's message."""
    return process.stdout[-3000:] + process.stderr[-3000:]


@dataclass(frozen=True)
class LocalRun:
    process: subprocess.CompletedProcess[str]
    results: dict[str, Any]  # the `--output` file
    seconds: float

    @property
    def output(self) -> str:
        return output_tail(self.process)


def run_experiment(
    document: Mapping[str, Any],
    directory: Path,
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> LocalRun:
    """`kubetune run --no-live --output results.json` of DOCUMENT in DIRECTORY.

    Fails the test when no results file was written; the exit status is the caller's to
    judge (a failed experiment still writes its results)."""
    path = directory / f"{document['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(dict(document)))
    out = directory / "results.json"
    started = time.monotonic()
    done = subprocess.run(
        [*KUBETUNE, "run", str(path), "--no-live", "--output", str(out)],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ | dict(env or {}),
    )
    seconds = time.monotonic() - started
    assert out.exists(), output_tail(done)
    return LocalRun(done, json.loads(out.read_text()), seconds)
