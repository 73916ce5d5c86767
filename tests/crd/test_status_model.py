"""The statuses the operator writes and the CRDs' status schemas are one model.

The API server prunes every key a structural schema does not list (silently: the write
succeeds, the key is gone), so a key written but missing from the schema is lost, and a
key listed but never written is documentation of nothing. The statuses here are built by
the operator's own builders (`operator/status.py`) from engines driven through the paths
that fill every field: rung schedulers with failures and interruptions, pbt, warm start.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from kubetune import crd
from kubetune.engine import Engine
from kubetune.events import ExitKind, PriorTrial, WarmStarted
from kubetune.operator import store
from kubetune.operator.status import (
    ExperimentStatus,
    FailedStatus,
    TrialStatus,
    experiment_status,
    failed_status,
    trial_lineage,
    trial_status,
)
from kubetune.simulate_pbt import simulate_population
from tests.engine.helpers import Driver, make_spec
from tests.pbt.test_engine import Decay
from tests.pbt.test_engine import spec as pbt_spec

NOW = 2000.0
CAPACITY = [{"type": "NodePoolReady", "status": "True", "reason": "Ready", "message": "ok"}]

# Status fields that the paths driven here do not write, each with what writes it.
# Empty today; a field added here must name the code path that writes it.
WRITTEN_ELSEWHERE: dict[tuple[str, str], str] = {}


def _schema(crd_document: dict[str, Any]) -> dict[str, Any]:
    version = crd_document["spec"]["versions"][0]
    return version["schema"]["openAPIV3Schema"]["properties"]["status"]


EXPERIMENT = _schema(crd.experiment_crd())
TRIAL = _schema(crd.trial_crd())

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list, tuple),
}


def problems(value: Any, schema: dict[str, Any], path: str = "status") -> Iterator[str]:
    """What the API server would prune (keys the schema lacks) or refuse (wrong types) in
    `value`; a null is a merge patch's deletion, never stored."""
    if value is None:
        return
    kind = schema.get("type")
    if kind is not None:
        ok = isinstance(value, _TYPES[kind]) and not (
            kind in ("integer", "number") and isinstance(value, bool)
        )
        if not ok:
            yield f"{path}: {type(value).__name__} where the schema says {kind}"
            return
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                yield from problems(item, properties[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                yield from problems(item, extra, f"{path}.{key}")
            elif item is not None:
                yield f"{path}.{key}: not in the schema, pruned by the API server"
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from problems(item, schema.get("items", {}), f"{path}[{index}]")


def schema_fields(schema: dict[str, Any], path: str = "status") -> Iterator[str]:
    """Every field the schema lists (below a list: its items' fields)."""
    for key, sub in schema.get("properties", {}).items():
        yield f"{path}.{key}"
        inner = sub.get("items", sub) if sub.get("type") == "array" else sub
        yield from schema_fields(inner, f"{path}.{key}")


def written_fields(value: Any, path: str = "status") -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if item is not None:
                yield f"{path}.{key}"
                yield from written_fields(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for item in value:
            yield from written_fields(item, path)


def records(engine: Engine) -> list[dict[str, Any]]:
    return [store.encode(seq, event) for seq, event in enumerate(engine.history)]


def statuses(
    engine: Engine, cost: tuple[float | None, float | None] = (None, None)
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The experiment's status and every trial's, as the operator's writes build them."""
    history = records(engine)
    experiment = experiment_status(engine, engine.spec, 3, cost, history, [], CAPACITY, NOW)
    trials = [
        trial_status(
            trial,
            history,
            f"node-{trial.number}",
            f"file:///ckpt/{trial.name}",
            trial_lineage(engine, trial.number),
            trial.attempt.number if trial.attempt else None,  # every attempt used the SDK
        )
        for trial in engine.trials
    ]
    return dict(experiment), [dict(trial) for trial in trials]


def asha_run() -> Engine:
    """Rungs (paused, promoted, stopped), a failure, an interruption, an end."""
    spec = make_spec(
        scheduler={"name": "asha", "resource": "epoch", "minResource": 1, "maxResource": 9},
        budget={"maxTrials": 6, "parallelTrials": 3, "maxFailedTrials": 3},
    )
    driver = Driver(spec)
    driver.decide()
    driver.exit(0, None, ExitKind.INTERRUPTED)
    driver.exit(1, 1)
    for _ in range(200):
        running = [t.number for t in driver.engine.trials if t.phase.value == "Running"]
        if not running:
            break
        for number in running:
            trial = driver.engine.trials[number]
            step = trial.last_step + 1 if trial.last_step is not None else 1
            verdict = driver.report(number, step, 1.0 / (number + 1) + 1.0 / step)
            ended = verdict.decision.value != "continue" or step >= 9
            if ended and driver.engine.trials[number].phase.value == "Running":
                driver.exit(number, 0)
        driver.decide()
    assert driver.engine.ended is not None, driver.engine.counts()
    return driver.engine


def warm_engine() -> Engine:
    spec = make_spec(budget={"maxTrials": 2})
    engine = Engine(spec, "exp")
    prior = PriorTrial(experiment="old", trial="old-0", params={"x": 0.5}, value=0.25)
    engine.warm = WarmStarted("transfer", ["old"], 1.0, (prior,), {"out of range": 2})
    return engine


def interrupt_once(number: int, step: int) -> bool:
    """Member 1's pod lost once, at step 5."""
    if (number, step) == (1, 5) and not LOST:
        LOST.append(step)
        return True
    return False


LOST: list[int] = []


def scenarios() -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    LOST.clear()
    pbt = simulate_population(pbt_spec(), Decay(), interrupt=interrupt_once)
    return [
        statuses(asha_run(), (1.25, NOW)),
        statuses(pbt.engine),
        statuses(warm_engine()),
    ]


def keys(model: type) -> set[str]:
    return set(model.__required_keys__) | set(model.__optional_keys__)  # type: ignore[attr-defined]


def test_the_status_types_and_the_schemas_list_the_same_keys() -> None:
    """status.py's TypedDicts (mypy holds the builders to them) are the schemas' keys."""
    assert keys(ExperimentStatus) == set(EXPERIMENT["properties"])
    assert keys(TrialStatus) == set(TRIAL["properties"])
    assert keys(FailedStatus) <= keys(ExperimentStatus)


def test_every_written_status_key_survives_the_schema() -> None:
    found: list[str] = []
    failed = failed_status("Invalid", "spec.budget: required", 2, [], NOW)
    found += problems(dict(failed), EXPERIMENT)
    for experiment, trials in scenarios():
        found += problems(experiment, EXPERIMENT)
        for trial in trials:
            found += problems(trial, TRIAL, "trial.status")
    assert not found, "\n".join(sorted(set(found)))


def test_every_schema_field_is_written_by_some_path() -> None:
    written: dict[str, set[str]] = {"experiment": set(), "trial": set()}
    for experiment, trials in scenarios():
        written["experiment"] |= set(written_fields(experiment))
        for trial in trials:
            written["trial"] |= set(written_fields(trial))
    unwritten = [
        f"{kind}: {field}"
        for kind, schema in (("experiment", EXPERIMENT), ("trial", TRIAL))
        for field in schema_fields(schema)
        if field not in written[kind] and (kind, field) not in WRITTEN_ELSEWHERE
    ]
    assert not unwritten, "listed in the CRD, written by nothing:\n" + "\n".join(unwritten)


def test_a_reason_documented_as_camel_case_holds_camel_case() -> None:
    camel = re.compile(r"^[A-Z][A-Za-z0-9]*$")
    for kind, schema, index in (("experiment", EXPERIMENT, 0), ("trial", TRIAL, 1)):
        if "CamelCase" not in schema["properties"]["reason"].get("description", ""):
            continue
        for scenario in scenarios():
            built = scenario[index]
            for status in built if isinstance(built, list) else [built]:
                reason = status["reason"]
                assert not reason or camel.match(reason), (kind, reason)
