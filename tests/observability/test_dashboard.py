"""The Grafana dashboard: every query names only metrics the operator exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.core import Metric

from kubetune.observability.metrics import Metrics
from tests.observability.test_rules import rule_groups
from tests.prereq import require

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "manifests" / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
# Series Prometheus makes itself, not the operator.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}
_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan", "atan2",
}  # fmt: skip


def exported_names() -> set[str]:
    """Every series name the operator's registry can expose, suffixes included."""
    names: set[str] = set()
    families: list[Metric] = list(Metrics().registry.collect())
    for family in families:
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # strings
    text = re.sub(r"\$\{?\w+\}?", "", text)  # dashboard variables
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function (or an aggregation)
        if word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def template_metric_names(query: str) -> set[str]:
    """label_values(metric{...}, label) and friends name one metric; other queries are PromQL."""
    found = re.match(r"\s*(?:label_values|series)\s*\(\s*([A-Za-z_:][\w:]*)", query)
    if found:
        return {found.group(1)}
    if re.match(r"\s*label_values\s*\(\s*\w+\s*\)", query):
        return set()  # label_values(label): every metric
    inner = re.match(r"\s*query_result\s*\((.*)\)\s*$", query, re.S)
    return metric_names(inner.group(1) if inner else query)


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def test_the_extractor_finds_metrics_and_only_metrics() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(kubetune_x_bucket{a=~"$b", le!="1"}'
        "[$__rate_interval]))) > 2 and on (namespace) kubetune_y == 1 or vector(0) "
        "offset 5m"
    )
    assert metric_names(expr) == {"kubetune_x_bucket", "kubetune_y"}
    assert template_metric_names('label_values(kubetune_z{namespace=~"$ns"}, experiment)') == {
        "kubetune_z"
    }


def test_every_dashboard_query_names_an_exported_metric() -> None:
    exported = exported_names() | PROMETHEUS_SERIES
    board = dashboard()
    queried: dict[str, set[str]] = {}
    for panel in panels(board):
        for target in panel.get("targets", []):
            names = metric_names(target["expr"])
            assert names, (panel["title"], target["expr"])
            queried[f"{panel['title']} {target['refId']}"] = names
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            queried[f"${variable['name']}"] = template_metric_names(query)
    unknown = {where: names - exported for where, names in queried.items() if names - exported}
    assert not unknown, f"queries name metrics the operator does not export: {unknown}"
    assert any(n.startswith("kubetune_") for names in queried.values() for n in names)


def test_a_misspelt_metric_would_be_caught() -> None:
    exported = exported_names()
    assert "kubetune_trials" in exported and "kubetune_trial" not in exported
    assert "kubetune_report_decision_latency_seconds_bucket" in exported
    assert metric_names("sum(kubetune_trial)") - exported == {"kubetune_trial"}


def test_every_alert_names_an_exported_metric() -> None:
    exported = exported_names() | PROMETHEUS_SERIES
    for group in rule_groups()["groups"]:
        for rule in group["rules"]:
            names = metric_names(rule["expr"])
            assert names and names <= exported, (rule["alert"], names - exported)


def test_dashboard_has_the_variables_and_panels_users_need() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    experiment = variables["experiment"]
    assert experiment["type"] == "query" and experiment["includeAll"] and experiment["multi"]
    titles = {p["title"] for p in panels(board)}
    for wanted in (
        "Best objective so far",
        "Trials by phase",
        "GPU nodes by pool",
        "Cost so far (USD)",
        "Report-to-decision latency",
        "Interruptions",
    ):
        assert wanted in titles
    for panel in panels(board):
        if panel.get("type") == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            if "kubetune_experiment_" in target["expr"] or "kubetune_trials" in target["expr"]:
                assert '"$experiment"' in target["expr"], (panel["title"], target["expr"])
    latency = next(p for p in panels(board) if p["title"] == "Report-to-decision latency")
    assert all("histogram_quantile" in t["expr"] for t in latency["targets"])
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))


def test_kustomize_wraps_the_dashboard_in_a_configmap_for_grafanas_sidecar() -> None:
    kubectl = shutil.which("kubectl")
    require(kubectl, "kubectl is not installed")
    assert kubectl is not None
    rendered = subprocess.run(
        [kubectl, "kustomize", str(MONITORING)], capture_output=True, text=True, timeout=60
    )
    assert rendered.returncode == 0, rendered.stderr
    documents = {d["kind"]: d for d in yaml.safe_load_all(rendered.stdout)}
    assert set(documents) == {"ConfigMap", "ServiceMonitor", "PrometheusRule"}
    config_map = documents["ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["grafana-dashboard.json"]) == dashboard()
    endpoint = documents["ServiceMonitor"]["spec"]["endpoints"][0]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    service = yaml.safe_load((REPO / "manifests" / "service.yaml").read_text())
    assert "http" in [p["name"] for p in service["spec"]["ports"]]
    selector = documents["ServiceMonitor"]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert documents["ServiceMonitor"]["metadata"]["name"] == service["metadata"]["name"]
