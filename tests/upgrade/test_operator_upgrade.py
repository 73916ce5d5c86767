"""An operator upgrade in the middle of an experiment loses nothing.

The previous release (v0.1.0) is installed as an admin would (its manifests, CRDs
included), its operator, run from a `git worktree` of the release, starts an
experiment; it is stopped mid-experiment (SIGTERM, or SIGKILL), the admin applies the
current manifests, and the current operator, with the same token key and endpoint, takes
over. The trials keep the release's SDK (a user's trial image does not change with the
operator), including those in flight across the switch, which hold tokens the release
derived. The experiment must complete with exactly maxTrials trials, none failed, every
trial's reports kept.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.operator.harness import (
    GPU_NODE_TAINTS,
    REPO,
    OperatorProcess,
    apply,
    experiment,
    finished,
    trials,
    wait_for,
)
from tests.upgrade.release import release_worktree

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

MAX_TRIALS = 8
OPERATOR = ("kubetune-system", "kubetune-operator")


def install(control_plane: Any, manifests: Path) -> Path:
    """`kubectl apply -k` of a release's manifests, as the admin does; the operator runs
    here as a process with the manifests' ServiceAccount, not as the Deployment."""
    control_plane.kubectl("apply", "-k", str(manifests), timeout=120)
    control_plane.kubectl(
        "delete", "deployment", OPERATOR[1], "-n", OPERATOR[0], "--ignore-not-found"
    )
    for crd in ("hpoexperiments.kubetune.dev", "hpotrials.kubetune.dev"):
        control_plane.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    return control_plane.service_account_kubeconfig(*OPERATOR)


def phases(control_plane: Any, namespace: str) -> list[str]:
    return [(t.get("status") or {}).get("phase", "") for t in trials(control_plane, namespace)]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_the_current_operator_takes_over_a_release_experiment(
    control_plane: Any,
    namespace: str,
    process_node_factory: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stop: signal.Signals,
) -> None:
    with release_worktree(tmp_path) as release:
        old_path = f"{release / 'operator'}:{release / 'trial_image'}"
        # The trials run the release's SDK before and after the upgrade.
        process_node_factory(
            gpus=3,
            taints=GPU_NODE_TAINTS,
            env={"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(release / "trial_image")},
        )
        old_kubeconfig = install(control_plane, release / "manifests")
        (tmp_path / "old").mkdir()
        old = OperatorProcess(old_kubeconfig, tmp_path / "old")
        with monkeypatch.context() as patch:
            patch.setenv("PYTHONPATH", old_path)
            old.start()
        name = "upgraded"
        checkpoints = (tmp_path / "ckpt").as_uri()
        document = experiment(
            name, max_trials=MAX_TRIALS, parallel=3, checkpoints=checkpoints, sleep=0.4
        )
        apply(control_plane, namespace, document)
        try:
            wait_for(
                "two trials done and one running under the release's operator",
                lambda: (
                    sum(
                        p in ("Completed", "Stopped", "Paused")
                        for p in phases(control_plane, namespace)
                    )
                    >= 2
                    and "Running" in phases(control_plane, namespace)
                ),
                180,
                lambda: f"phases {phases(control_plane, namespace)}\n{old.log_tail()}",
            )
        finally:
            assert old.process is not None
            old.process.send_signal(stop)
            old.process.wait(timeout=20)
        running_at_stop = {
            t["metadata"]["name"]
            for t in trials(control_plane, namespace)
            if (t.get("status") or {}).get("phase") == "Running"
        }
        time.sleep(1.0)

        new_kubeconfig = install(control_plane, REPO / "manifests")
        (tmp_path / "new").mkdir()
        new = OperatorProcess(new_kubeconfig, tmp_path / "new")
        # The same key (the same Secret in a cluster) and the same Service address.
        new.key_file.write_bytes(old.key_file.read_bytes())
        new.port, new.checkpoints = old.port, old.checkpoints
        new.start()
        try:
            done = wait_for(
                "the experiment to finish under the current operator",
                lambda: finished(control_plane, namespace, name),
                300,
                lambda: f"{old.log_tail()}\n----- current -----\n{new.log_tail()}",
            )
        finally:
            new.stop()
            print(f"--- release operator ---\n{old.log_tail()}\n--- current ---\n{new.log_tail()}")

    assert done["phase"] == "Succeeded", done
    listed = trials(control_plane, namespace)
    names = sorted(t["metadata"]["name"] for t in listed)
    assert names == sorted(f"{name}-{n}" for n in range(MAX_TRIALS)) and len(names) == MAX_TRIALS
    assert done["trialsTotal"] == MAX_TRIALS
    assert running_at_stop, "no trial was in flight at the switch"
    for trial in listed:
        state = trial["status"]
        assert state["phase"] in ("Completed", "Stopped"), (trial["metadata"]["name"], state)
        history = state["history"]
        reports = [r for r in history if r["type"] == "Reported"]
        assert reports, f"{trial['metadata']['name']} lost its reports"
        assert state["value"] == pytest.approx(reports[-1]["metrics"]["loss"])
        launches = [r["attempt"] for r in history if r["type"] == "TrialLaunched"]
        assert launches == list(range(1, len(launches) + 1)), "an attempt was launched twice"
        # Every record the release wrote was taken over (signed on the first load).
        assert all("mac" in r for r in history)
