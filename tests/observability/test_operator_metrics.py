"""/metrics of the real operator during a real experiment, on the real control plane.

The operator runs as its own process with the manifests' ServiceAccount and
`--log-format json`; trials run the real SDK on a process node. The scrape is checked
with `promtool check metrics`, and its values against what the operator stored in the
HPOExperiment and HPOTrials.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.observability.scrape import check_metrics, fetch, matching, samples, value
from tests.operator.conftest import installed  # noqa: F401  (the fixture)
from tests.operator.harness import (
    GPU_NODE_TAINTS,
    TRIALS,
    OperatorProcess,
    apply,
    experiment,
    finished,
    get,
    trials,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

FINAL = ("Completed", "Stopped", "Failed")


@pytest.fixture
def json_operator(installed: Path, tmp_path: Path) -> Iterator[OperatorProcess]:  # noqa: F811
    # No banner: every line of its log must be one JSON object.
    process = OperatorProcess(installed, tmp_path, ["--log-format=json"], banner=False).start()
    try:
        yield process
    finally:
        process.stop()
        print(f"--- operator log tail ---\n{process.log_tail()}")


def scrape(operator: OperatorProcess) -> tuple[str, dict]:
    text, content_type = fetch(f"{operator.endpoint}/metrics")
    assert content_type.startswith("text/plain"), content_type
    return text, samples(text)


def test_metrics_match_the_experiment_and_pass_promtool(
    control_plane: Any,
    namespace: str,
    json_operator: OperatorProcess,
    process_node_factory: Any,
    promtool: str,
) -> None:
    operator = json_operator
    process_node_factory(gpus=2, taints=GPU_NODE_TAINTS)
    command = ["python", str(TRIALS / "quadratic.py"), "--sleep=0.3", "--fail-if-x-above=0.5"]
    apply(control_plane, namespace, experiment("metered", command=command, max_trials=8))
    key = {"namespace": namespace, "experiment": "metered"}

    # ----- during the run ------------------------------------------------------------
    def running_scrape() -> tuple[str, dict] | None:
        try:
            text, found = scrape(operator)
        except (urllib.error.URLError, ConnectionError):
            return None  # not listening yet
        running = value(found, "kubetune_trials", **key, phase="Running") or 0
        return (text, found) if running >= 1 else None

    text, found = wait_for("a running trial in /metrics", running_scrape, 120, operator.log_tail)
    checked = check_metrics(promtool, text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == "", checked
    assert value(found, "kubetune_experiment_phase", **key, phase="Running") == 1
    by_phase = matching(found, "kubetune_trials", **key)
    assert len(by_phase) == 7 and sum(by_phase.values()) >= 1
    # A forged report is refused, and counted.
    request = urllib.request.Request(
        f"{operator.endpoint}/ns/{namespace}/exp/metered/v1/reports", data=b"{}", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401

    # ----- at the end: the values are the experiment's --------------------------------
    done = wait_for(
        "the experiment to finish",
        lambda: finished(control_plane, namespace, "metered"),
        300,
        operator.log_tail,
    )
    text, found = scrape(operator)
    checked = check_metrics(promtool, text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    listed = trials(control_plane, namespace)
    phases = Counter(t["status"]["phase"] for t in listed)
    assert sum(phases.values()) == done["trialsTotal"] == 8
    for phase, count in matching(found, "kubetune_trials", **key).items():
        assert count == phases.get(dict(phase)["phase"], 0), (dict(phase), phases)
    assert value(found, "kubetune_experiment_best_objective_value", **key) == done["bestValue"]
    assert value(found, "kubetune_experiment_phase", **key, phase=done["phase"]) == 1
    assert value(found, "kubetune_experiments", namespace=namespace, phase=done["phase"]) == 1
    interruptions = value(found, "kubetune_trial_interruptions_total", **key)
    assert interruptions == done["interruptions"]
    # Events counted by this operator process, which saw the whole experiment.
    for phase in FINAL:
        ended = value(found, "kubetune_trials_ended_total", **key, phase=phase)
        assert ended == phases.get(phase, 0), (phase, ended, phases)
        durations = value(found, "kubetune_trial_duration_seconds_count", **key, phase=phase)
        assert (durations or 0) == phases.get(phase, 0)
    reports = sum(
        1 for t in listed for record in t["status"]["history"] if record["type"] == "Reported"
    )
    received = value(found, "kubetune_reports_received_total", **key)
    decisions = matching(found, "kubetune_decisions_total", **key)
    assert received == reports == sum(decisions.values())
    assert value(found, "kubetune_report_decision_latency_seconds_count", **key) == received
    paused = sum(
        1
        for t in listed
        for record in t["status"]["history"]
        if record["type"] == "Reported" and record["verdict"]["decision"] == "pause"
    )
    assert value(found, "kubetune_decisions_total", **key, decision="pause") == paused
    promoted = sum(
        1 for t in listed for record in t["status"]["history"] if record["type"] == "TrialPromoted"
    )
    assert value(found, "kubetune_trial_promotions_total", **key) == promoted
    assert (value(found, "kubetune_reports_refused_total", code="401") or 0) >= 1

    # ----- Events and JSON logs ----------------------------------------------------------
    reasons: Counter[str] = Counter()
    for event in get(control_plane, namespace, "events")["items"]:
        reasons[event["reason"]] += event.get("count") or 1  # one may stand for several
    assert reasons["TrialCompleted"] == phases.get("Completed", 0)
    assert reasons["TrialFailed"] == phases.get("Failed", 0)
    assert reasons["TrialPaused"] >= 1 and paused >= 1
    assert reasons["TrialPromoted"] == promoted
    lines = [line for line in operator.log_path.read_text().splitlines() if line.strip()]
    documents = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(d) for d in documents)
    about = [d for d in documents if d.get("namespace") == namespace]
    assert any(d.get("experiment") == "metered" for d in about), documents[-20:]
