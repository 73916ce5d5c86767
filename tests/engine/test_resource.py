"""The resource a trial used counts from where each attempt started, not from its first
report (issue 10, item 9)."""

from __future__ import annotations

from kubetune.engine import Engine
from kubetune.events import ExitKind

from .helpers import Driver, json_round_trip, launches, make_spec


def test_a_trial_reporting_every_five_epochs_used_all_of_them() -> None:
    driver = Driver(make_spec(scheduler={"name": "none", "resource": "epoch"}))
    assert launches(driver.decide())[0][:2] == (0, 1)
    for epoch in (5, 10, 15, 20):
        driver.report(0, epoch, 1.0 / epoch)
    assert driver.exit(0)
    assert driver.engine.trials[0].resource == 20
    replayed = Engine.replay(driver.engine.spec, "exp", json_round_trip(driver.engine.history))
    assert replayed.trials[0].resource == 20


def test_a_resumed_attempt_counts_from_where_its_predecessor_stopped() -> None:
    spec = make_spec(scheduler={"name": "none", "resource": "epoch"}, budget={"maxTrials": 1})
    driver = Driver(spec)
    driver.decide()
    driver.report(0, 5, 0.5)
    driver.report(0, 10, 0.4)
    assert driver.exit(0, None, ExitKind.INTERRUPTED)  # checkpointed at 10, then lost
    assert launches(driver.decide()) == [(0, 2, True, None)]
    driver.report(0, 15, 0.3)
    driver.report(0, 20, 0.2)
    assert driver.exit(0)
    assert driver.engine.trials[0].resource == 20


def test_a_resume_from_an_older_checkpoint_counts_what_it_trained_again() -> None:
    spec = make_spec(scheduler={"name": "none", "resource": "epoch"}, budget={"maxTrials": 1})
    driver = Driver(spec)
    driver.decide()
    for epoch in range(1, 11):
        driver.report(0, epoch, 1.0 / epoch)
    assert driver.exit(0, None, ExitKind.INTERRUPTED)  # its last checkpoint was at 8
    driver.decide()
    for epoch in range(9, 13):
        driver.report(0, epoch, 1.0 / epoch)
    assert driver.exit(0)
    assert driver.engine.trials[0].resource == 10 + 4
