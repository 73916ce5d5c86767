"""pytest fixtures for tests against the real control plane (``@pytest.mark.cluster``).

* ``control_plane`` (session): a started :class:`ControlPlane`. Missing binaries skip
  the test, or fail it when ``CI=true`` (a missing prerequisite in CI is a failure).
* ``kubeconfig``: the admin kubeconfig's path. ``k8s_api``: an admin ``ApiClient``.
* ``namespace``: a fresh namespace per test (deleted afterwards, without waiting).
* ``process_node`` / ``process_node_factory``: :class:`ProcessNode` agents whose pods
  run as local processes with the test's Python first on PATH and PYTHONUNBUFFERED=1
  (the trial image's ENV); stopped (pods Failed/Terminated, Node deleted)
  after the test.
* ``kwok``: a kwok process (one per session) whose nodes are deleted after each test.

When a test that uses the cluster fails, its report gets the tails of every
component's log and of the logs of pods that ran on its process nodes.
"""

from __future__ import annotations

import itertools
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.prereq import missing as missing_prerequisite

# The cluster modules import the kubernetes client and cryptography (most of a second);
# every pytest run loads this plugin, so they are imported only when a fixture runs.
if TYPE_CHECKING:
    from .controlplane import Binaries, ControlPlane
    from .kwok import Kwok
    from .process_node import ProcessNode

# What is running now, for the failure report hook.
_active: dict[str, Any] = {"cp": None, "nodes": []}
_node_numbers = itertools.count()


def _binaries_or_skip() -> Binaries:
    from .controlplane import Binaries

    binaries = Binaries.locate()
    if missing := binaries.missing():
        msg = (
            f"control plane binaries missing: {', '.join(missing)}. "
            "Build them with tests/cluster/build.sh"
        )
        missing_prerequisite(msg)
    return binaries


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    from .controlplane import ControlPlane

    cp = ControlPlane(binaries=_binaries_or_skip())
    cp.start()
    _active["cp"] = cp
    try:
        yield cp
    finally:
        _active["cp"] = None
        cp.stop()


@pytest.fixture
def kubeconfig(control_plane: ControlPlane) -> Path:
    return control_plane.kubeconfig


@pytest.fixture
def k8s_api(control_plane: ControlPlane) -> Iterator[Any]:
    api = control_plane.api_client()
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace, ready for pods (its default ServiceAccount exists)."""
    from kubernetes import client as k8s

    from .controlplane import wait_until

    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{base or 't'}-{uuid.uuid4().hex[:6]}"
    api = control_plane.api_client()
    v1 = k8s.CoreV1Api(api)
    v1.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    # Pod admission refuses pods until the ServiceAccount controller made `default`.
    wait_until(
        lambda: v1.read_namespaced_service_account("default", name),
        30,
        f"ServiceAccount default in {name}",
    )
    try:
        yield name
    finally:
        try:
            v1.delete_namespace(name)
        except Exception as exc:  # the cluster may be gone already; don't mask a failure
            print(f"could not delete namespace {name}: {exc}", file=sys.stderr)
        api.close()


@pytest.fixture
def process_node_factory(control_plane: ControlPlane) -> Iterator[Callable[..., ProcessNode]]:
    """``make(name=None, **ProcessNode kwargs)`` -> a started node; names default to
    ``local-N``. Pods find this interpreter's ``python`` first on PATH."""
    from .process_node import ProcessNode

    nodes: list[ProcessNode] = []

    def make(name: str | None = None, **kwargs: Any) -> ProcessNode:
        kwargs.setdefault("path_prefix", [Path(sys.executable).parent])
        # Images are ignored, so their ENV is too; this is what trial_image's sets.
        kwargs.setdefault("env", {"PYTHONUNBUFFERED": "1"})
        node = ProcessNode.for_control_plane(
            control_plane, name or f"local-{next(_node_numbers)}", **kwargs
        )
        node.start()
        nodes.append(node)
        _active["nodes"].append(node)
        return node

    try:
        yield make
    finally:
        for node in nodes:
            node.stop()
            _active["nodes"].remove(node)


@pytest.fixture
def process_node(process_node_factory: Callable[..., ProcessNode]) -> ProcessNode:
    return process_node_factory()


@pytest.fixture(scope="session")
def _kwok_session(control_plane: ControlPlane) -> Iterator[Kwok]:
    from .kwok import Kwok

    kwok = Kwok(control_plane).start()
    try:
        yield kwok
    finally:
        kwok.stop()


@pytest.fixture
def kwok(_kwok_session: Kwok) -> Iterator[Kwok]:
    """The session's kwok; nodes a test creates are deleted after it, so that they do
    not take pods meant for other tests."""
    before = set(_kwok_session.nodes)
    try:
        yield _kwok_session
    finally:
        if created := [n for n in _kwok_session.nodes if n not in before]:
            _kwok_session.delete_nodes(created)


def _diagnostics() -> str:
    from .controlplane import tail_file

    parts = []
    cp: ControlPlane | None = _active["cp"]
    if cp is not None:
        parts.append(cp.format_log_tails(30))
    for node in _active["nodes"]:
        for log_path in sorted(node.workdir.glob("pods/*/*.log")):
            parts.append(
                f"----- pod log {log_path.parent.name} ({node.name}) -----\n"
                f"{tail_file(log_path, 20)}"
            )
    return "\n".join(parts)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    uses_cluster = "control_plane" in getattr(item, "fixturenames", ())
    if report.failed and uses_cluster and _active["cp"] is not None:
        report.sections.append(("control plane logs (tails)", _diagnostics()))
    return report
