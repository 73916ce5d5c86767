"""Reading a /metrics exposition, and checking it with promtool."""

from __future__ import annotations

import subprocess
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def fetch(url: str, timeout: float = 10) -> tuple[str, str]:
    """(body, content type) of a GET."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode(), response.headers.get("Content-Type", "")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(sample name, labels): value} of an exposition in the text format."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def matching(found: dict, name: str, **labels: str) -> dict[frozenset, float]:
    """Samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return {key[1]: v for key, v in found.items() if key[0] == name and wanted <= key[1]}


def check_metrics(promtool: str, text: str) -> subprocess.CompletedProcess[str]:
    """`promtool check metrics` (format and lint) on an exposition."""
    return subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
