"""`kubetune run --metrics-port`: the same metrics, served by a local run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest
import yaml

from tests.local.test_run import ASHA, TRIALS, experiment
from tests.observability.scrape import check_metrics, fetch, matching, samples, value
from tests.operator.harness import free_port

pytestmark = pytest.mark.slow


def test_a_local_run_serves_metrics_while_it_runs(promtool: str, tmp_path: Path) -> None:
    document = experiment(
        "local-metrics",
        [sys.executable, str(TRIALS / "quadratic.py"), "--sleep=0.15"],
        scheduler=ASHA,
        budget={"maxTrials": 6, "parallelTrials": 2},
    )
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(document))
    port = free_port()
    results = tmp_path / "results.json"
    command = [sys.executable, "-m", "kubetune.cli", "run", str(path), "--no-live"]
    command += ["--metrics-port", str(port), "--output", str(results)]
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    scrapes: list[str] = []
    deadline = time.monotonic() + 180
    while process.poll() is None and time.monotonic() < deadline:
        try:
            text, content_type = fetch(f"http://127.0.0.1:{port}/metrics", timeout=5)
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
            continue
        assert content_type.startswith("text/plain")
        scrapes.append(text)
        time.sleep(0.5)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert f"Prometheus metrics on http://127.0.0.1:{port}/metrics" in output
    assert len(scrapes) >= 3, output

    key = {"namespace": "", "experiment": "local-metrics"}
    running = [samples(text) for text in scrapes]
    checked = check_metrics(promtool, scrapes[len(scrapes) // 2])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert any(
        (value(found, "kubetune_trials", **key, phase="Running") or 0) >= 1 for found in running
    )
    for found in running:
        received = value(found, "kubetune_reports_received_total", **key) or 0
        decisions = matching(found, "kubetune_decisions_total", **key)
        assert sum(decisions.values()) == received
        latency = value(found, "kubetune_report_decision_latency_seconds_count", **key) or 0
        assert latency == received
    last = running[-1]
    final = json.loads(results.read_text())
    assert len(final["trials"]) == 6
    # The last scrape saw at most the final state: never more trials, never a better best.
    assert sum(matching(last, "kubetune_trials", **key).values()) <= 6
    best = value(last, "kubetune_experiment_best_objective_value", **key)
    assert best is not None and best >= final["best"]["value"] - 1e-12
