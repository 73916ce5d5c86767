"""A PBT member's lineage in its HPOTrial status (what `kubectl get hpot -o wide` and
`-o yaml` show): parent, the step it started from, its generation, who replaced it, and
the parameters that trained it step range by step range."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune import crd
from kubetune.events import TrialExploited
from kubetune.operator import status
from kubetune.operator.status import trial_lineage, trial_status
from kubetune.schedulers.pbt import generation
from kubetune.simulate_pbt import simulate_population
from tests.engine.helpers import Driver, make_spec
from tests.pbt.test_engine import Decay, spec


def status_of(engine: Any, number: int) -> dict[str, Any]:
    trial = engine.trials[number]
    lineage = trial_lineage(engine, number)
    return dict(trial_status(trial, [], None, "", lineage))


def test_each_member_shows_its_generation_parent_and_schedule() -> None:
    engine = simulate_population(spec(), Decay()).engine
    exploits = [e for e in engine.history if isinstance(e, TrialExploited)]
    assert exploits
    deepest = max(range(len(engine.trials)), key=lambda n: generation(engine.trials, n))
    assert generation(engine.trials, deepest) >= 2, "a grandchild, to show a whole line"
    for trial in engine.trials:
        lineage = status_of(engine, trial.number)["lineage"]
        line, ancestor = [trial.number], trial.parent
        while ancestor is not None:
            line.insert(0, ancestor)
            ancestor = engine.trials[ancestor].parent
        assert lineage["generation"] == len(line) - 1
        assert [e["trial"] for e in lineage["schedule"]] == [engine.trials[n].name for n in line]
        assert lineage["schedule"][-1]["params"] == trial.params
        assert lineage["schedule"][0]["fromStep"] == 0
        steps = [e["fromStep"] for e in lineage["schedule"]]
        assert steps == sorted(steps) and steps[1:] == [
            engine.trials[n].from_step for n in line[1:]
        ]
        if trial.parent is None:
            assert lineage["parent"] is None and lineage["fromStep"] is None
        else:
            parent = engine.trials[trial.parent]
            assert (lineage["parent"], lineage["fromStep"]) == (parent.name, trial.from_step)
            # The old top-level fields keep working.
            status = status_of(engine, trial.number)
            assert (status["parent"], status["fromStep"]) == (parent.name, trial.from_step)
        replaced = trial.replaced_by
        assert lineage["replacedBy"] == (None if replaced is None else engine.trials[replaced].name)


def test_the_schedule_in_a_status_is_bounded_and_the_crd_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schema = crd.trial_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    lineage = schema["properties"]["status"]["properties"]["lineage"]
    assert lineage["properties"]["schedule"]["maxItems"] == status.SCHEDULE_KEPT
    # A long line keeps its latest entries (the experiment's bestSchedule is whole).
    engine = simulate_population(spec(), Decay()).engine
    child = max(engine.trials, key=lambda t: generation(engine.trials, t.number))
    monkeypatch.setattr(status, "SCHEDULE_KEPT", 2)
    shown = status_of(engine, child.number)["lineage"]
    assert [e["trial"] for e in shown["schedule"]][-1] == child.name
    assert len(shown["schedule"]) == 2 < shown["generation"] + 1


def test_a_trial_of_another_scheduler_has_no_lineage() -> None:
    driver = Driver(make_spec(budget={"maxTrials": 2}))
    driver.decide()
    assert status_of(driver.engine, 0)["lineage"] is None


def test_kubectl_shows_the_generation_with_o_wide() -> None:
    columns = crd.trial_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    gen = next(c for c in columns if c["name"] == "Gen")
    assert gen["jsonPath"] == ".status.lineage.generation" and gen["priority"] == 1
