"""pytest plugin: under CI=true a run that skipped (or xfailed) any test fails.

tests/prereq.py already turns a missing prerequisite into a failure in CI; this catches
every other route to a skip (a `pytest.skip` or skip marker added later), so that a
green CI run means every collected test ran."""

from __future__ import annotations

import pytest

from tests.prereq import in_ci

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if in_ci() and _skipped and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if in_ci() and _skipped:
        terminalreporter.write_line(
            f"CI=true: {len(_skipped)} test(s) skipped, which fails the run: "
            + ", ".join(_skipped[:10]),
            red=True,
        )
