"""Shared pytest configuration: fixture plugins live next to what they start."""

# tests.ci_gate: under CI=true, a skipped test fails the run.
pytest_plugins = ["tests.cluster.fixtures", "tests.ci_gate"]
