"""Fixtures for the observability tests: Prometheus' own `promtool`."""

from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool from Debian's `prometheus` package (`apt-get install prometheus`).

    Missing, the tests that need it are skipped, or fail when CI=true.
    """
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is not installed (Debian: apt-get install prometheus)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found
