"""The one way a test says a prerequisite is missing (a binary, a Python package, a
service): skipped on a developer's machine, a failure in CI (CI=true), where a skipped
test would be a check that silently never ran. tests/conftest.py also fails a CI run
that skipped anything by another route."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(why: str) -> NoReturn:
    """Stop the test: `why` names what is missing and how to get it."""
    if in_ci():
        pytest.fail(f"missing prerequisite (CI=true): {why}", pytrace=False)
    pytest.skip(why)


def require(condition: object, why: str) -> None:
    if not condition:
        missing(why)


def require_module(name: str, why: str) -> ModuleType:
    """`pytest.importorskip`, failing under CI."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        missing(f"{why} ({error})")
