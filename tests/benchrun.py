"""A bench/ script's `--quick` run from a smoke test, and the RESULT line it must end with."""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def run_quick(
    script: str, keys: Sequence[str], timeout: float, extra: Sequence[str] = ()
) -> tuple[list[str], dict[str, float]]:
    """Run `bench/SCRIPT --quick [EXTRA]`; its output lines and the RESULT line's values.

    Fails the test unless it exits 0 and its last line is `RESULT k1=v1 k2=v2 ...` with
    exactly `keys`, in order, each a finite number.
    """
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = completed.stdout.strip().splitlines()
    assert completed.returncode == 0, f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    result = re.compile("^RESULT " + " ".join(f"{key}=(\\S+)" for key in keys) + "$")
    match = result.match(lines[-1]) if lines else None
    assert match, f"last line is not a RESULT line: {lines[-1:]!r}"
    values = {key: float(text) for key, text in zip(keys, match.groups(), strict=True)}
    assert all(math.isfinite(value) for value in values.values()), lines[-1]
    return lines, values


def load_bench(script: str) -> ModuleType:
    """`bench/SCRIPT` as a module, so that a test calls the very code the bench measures."""
    path = ROOT / "bench" / script
    spec = importlib.util.spec_from_file_location(f"kubetune_bench_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
