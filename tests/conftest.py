"""Shared pytest configuration: fixture plugins live next to what they start."""

pytest_plugins = ["tests.cluster.fixtures"]
