"""Fixtures for the observability tests: Prometheus' own `promtool`."""

from __future__ import annotations

import shutil

import pytest

from tests.prereq import require


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool from Debian's `prometheus` package (`apt-get install prometheus`).

    Missing, the tests that need it are skipped, or fail when CI=true.
    """
    found = shutil.which("promtool")
    require(found, "promtool is not installed (Debian: apt-get install prometheus)")
    assert found is not None
    return found
