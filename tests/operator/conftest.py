"""Fixtures for tests that run the real operator on the real control plane."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.operator.harness import REPO, OperatorProcess


@pytest.fixture(scope="session")
def installed(control_plane: Any) -> Path:
    """The project's manifests applied; a kubeconfig of the operator's ServiceAccount."""
    control_plane.kubectl("apply", "-k", str(REPO / "manifests"), timeout=120)
    # The tests run the operator as a local process with the manifests' ServiceAccount;
    # the Deployment's own pod must not land on a process node and start a second one.
    control_plane.kubectl("delete", "deployment", "kubetune-operator", "-n", "kubetune-system")
    for crd in ("hpoexperiments.kubetune.dev", "hpotrials.kubetune.dev"):
        control_plane.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    return control_plane.service_account_kubeconfig("kubetune-system", "kubetune-operator")


@pytest.fixture
def operator(installed: Path, tmp_path: Path) -> Iterator[OperatorProcess]:
    process = OperatorProcess(installed, tmp_path).start()
    try:
        yield process
    finally:
        process.stop()
        print(f"--- operator log tail ---\n{process.log_tail()}")
