"""The alert rules: promtool checks them and fires each alert on synthetic series."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
RULE = REPO / "manifests" / "monitoring" / "prometheusrule.yaml"
UNIT_TESTS = Path(__file__).resolve().parent / "alerts_test.yaml"


def rule_groups() -> dict[str, Any]:
    """The PrometheusRule's spec: a Prometheus rules file ({groups: [...]})."""
    document = yaml.safe_load(RULE.read_text())
    assert document["kind"] == "PrometheusRule"
    return document["spec"]


def write_rules(directory: Path) -> Path:
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(rule_groups(), sort_keys=False))
    return path


def promtool_run(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_check_rules(promtool: str, tmp_path: Path) -> None:
    rules = write_rules(tmp_path)
    result = promtool_run(promtool, "check", "rules", str(rules), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout, result.stdout


def test_promtool_unit_tests_fire_each_alert_and_stay_silent_when_healthy(
    promtool: str, tmp_path: Path
) -> None:
    write_rules(tmp_path)
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    result = promtool_run(promtool, "test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not() -> None:
    alerts = {rule["alert"] for group in rule_groups()["groups"] for rule in group["rules"]}
    fired: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    assert fired == alerts, alerts - fired
    assert silent == alerts, alerts - silent


def test_every_alert_has_for_severity_summary_and_description() -> None:
    for group in rule_groups()["groups"]:
        for rule in group["rules"]:
            assert rule["alert"].startswith("Kubetune"), rule
            assert rule.get("for"), rule["alert"]
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]
            assert rule["annotations"]["description"], rule["alert"]
