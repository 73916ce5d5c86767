"""Which log-line reports go to the engine at once (decisions rest on them) and which wait."""

from __future__ import annotations

import math

from kubetune.local.batching import report_now, wanted
from tests.engine.helpers import Driver, make_spec

ASHA = {"name": "asha", "resource": "step", "minResource": 1, "maxResource": 9}
MEDIAN = {"name": "median", "resource": "step", "maxResource": 1000}


def running(scheduler: dict) -> Driver:  # type: ignore[type-arg]
    driver = Driver(make_spec(scheduler=scheduler, budget={"maxTrials": 2}))
    driver.decide()
    return driver


def test_lines_without_the_objective_are_not_events() -> None:
    assert wanted({"loss": 1.0, "acc": 0.5}, "loss")
    assert not wanted({"train_loss": 1.0}, "loss")


def test_rungs_targets_and_first_reports_go_at_once_the_rest_waits() -> None:
    driver = running(ASHA)  # rungs 1, 3, 9; the first attempt's target is 1
    engine = driver.engine
    assert report_now(engine, 0, 1, 1, {"loss": 1.0})  # the first report, and the target
    driver.report(0, 1, 1.0)
    assert report_now(engine, 0, 1, 2, {"loss": 1.0})  # told to pause already: hear it again


def test_between_rungs_a_report_waits() -> None:
    driver = running({**ASHA, "name": "asha"})
    engine = driver.engine
    trial = engine.trials[0]
    trial.attempts[-1].target = 9  # as if promoted to the top rung
    driver.report(0, 1, 1.0)
    driver.report(0, 3, 1.0)
    assert not report_now(engine, 0, 1, 4, {"loss": 0.5})
    assert not report_now(engine, 0, 1, 8, {"loss": 0.5})
    assert report_now(engine, 0, 1, 9, {"loss": 0.5})  # the rung and maxResource
    assert report_now(engine, 0, 1, 5, {"loss": math.nan})  # fails the trial
    assert report_now(engine, 0, 1, 5, {"acc": 0.5})  # not the objective: the engine decides


def test_median_stopping_hears_every_milestone() -> None:
    driver = running(MEDIAN)
    engine = driver.engine
    driver.report(0, 1, 1.0)
    assert report_now(engine, 0, 1, 99, {"loss": 1.0})
    assert report_now(engine, 0, 1, 110, {"loss": 1.0})
    assert not report_now(engine, 0, 1, 111, {"loss": 1.0})


def test_without_a_scheduler_only_the_first_and_the_last_matter() -> None:
    driver = running({"name": "none", "resource": "step"})
    engine = driver.engine
    driver.report(0, 1, 1.0)
    assert not report_now(engine, 0, 1, 2, {"loss": 1.0})
    assert not report_now(engine, 0, 1, 110, {"loss": 1.0})
    assert report_now(engine, 1, 1, 2, {"loss": 1.0})  # not running: the engine refuses it
