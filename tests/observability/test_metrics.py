"""The metrics, trial transitions, /metrics endpoints and JSON logs, without a cluster."""

from __future__ import annotations

import json
import logging
import math
import sys

import aiohttp
import pytest
from prometheus_client import generate_latest

from kubetune import observability
from kubetune.engine import Engine
from kubetune.events import ExitKind
from kubetune.ingest import Report, ReportServer
from kubetune.observability import JsonFormatter, TrialWatcher, bind_log_context
from kubetune.observability.metrics import ExperimentView, Metrics
from kubetune.observability.serve import MetricsServer
from kubetune.tokens import TokenAuthority
from kubetune.trials import TrialPhase, Verdict
from tests.engine.helpers import Driver, make_spec
from tests.observability.scrape import check_metrics, matching, samples, value

ASHA = {"name": "asha", "resource": "epoch", "minResource": 1, "maxResource": 3}


def scrape(metrics: Metrics) -> dict:
    return samples(generate_latest(metrics.registry).decode())


def asha_driver() -> Driver:
    spec = make_spec(
        scheduler=ASHA, budget={"maxTrials": 5, "parallelTrials": 1, "maxCostUSD": 10.0}
    )
    driver = Driver(spec, name="sweep")
    driver.decide()
    return driver


def test_state_is_read_from_the_engine_at_scrape_time() -> None:
    spec = make_spec(budget={"maxTrials": 3, "parallelTrials": 2, "maxDuration": "1h"})
    driver = Driver(spec, name="quad")
    driver.decide()
    driver.report(0, 1, 0.5)
    driver.report(0, 2, 0.25)
    driver.exit(0, 0)  # Completed
    driver.exit(1, None, ExitKind.INTERRUPTED)  # resumes: an interruption
    driver.now += 10
    driver.decide()
    driver.exit(1, 1)  # Failed
    metrics = Metrics(process_metrics=False)
    views = [ExperimentView("ml", "quad", driver.engine)]
    metrics.add_source(lambda: views)
    found = scrape(metrics)

    key = {"namespace": "ml", "experiment": "quad"}
    for phase, count in driver.engine.counts().items():
        assert value(found, "kubetune_trials", **key, phase=phase) == count
    assert value(found, "kubetune_trials", **key, phase="Completed") == 1
    assert value(found, "kubetune_trials", **key, phase="Failed") == 1
    assert value(found, "kubetune_experiment_best_objective_value", **key) == 0.25
    assert value(found, "kubetune_trial_interruptions_total", **key) == 1
    assert value(found, "kubetune_experiment_phase", **key, phase="Running") == 1
    assert value(found, "kubetune_experiment_phase", **key, phase="Succeeded") == 0
    assert value(found, "kubetune_experiments", namespace="ml", phase="Running") == 1
    assert value(found, "kubetune_experiment_max_trials", **key) == 3
    assert value(found, "kubetune_experiment_max_duration_seconds", **key) == 3600
    assert value(found, "kubetune_experiment_start_time_seconds", **key) == 1000.0
    assert value(found, "kubetune_experiment_last_progress_time_seconds", **key) == 1010.0
    assert matching(found, "kubetune_experiment_max_cost_usd") == {}  # no cost budget
    (info,) = matching(found, "kubetune_experiment_info", **key)
    assert dict(info) == {
        **key,
        "objective": "loss",
        "goal": "minimize",
        "algorithm": "random",
        "scheduler": "none",
        "resource": "",
        "node_pool": "",
    }

    # Nothing to keep in sync: the next scrape sees the engine as it is then.
    driver.decide()
    for number in [t.number for t in driver.engine.running()]:
        driver.report(number, 1, 0.1)
        driver.exit(number, 0)
    driver.decide()
    found = scrape(metrics)
    assert driver.engine.ended is not None
    assert value(found, "kubetune_experiment_phase", **key, phase="Succeeded") == 1
    assert value(found, "kubetune_experiments", namespace="ml", phase="Succeeded") == 1
    assert value(found, "kubetune_experiment_best_objective_value", **key) == 0.1

    views.clear()  # the experiment is gone: so are its series
    assert matching(scrape(metrics), "kubetune_trials") == {}


def test_trial_transitions_are_counted_and_named_for_events() -> None:
    driver = asha_driver()
    metrics = Metrics(process_metrics=False)
    watcher = TrialWatcher()
    metrics.start_experiment("ml", "sweep")
    assert watcher.update(driver.engine) == []  # the first look only remembers

    seen = []
    for number, loss in ((0, 0.9), (1, 0.1), (2, 0.8)):
        driver.report(number, 1, loss)
        driver.now += 30
        driver.exit(number, 0)
        driver.decide()
        seen += watcher.update(driver.engine)
    # exp-1, best at rung 0, is promoted once three trials reached it.
    events = [change.event() for change in seen]
    assert events == [
        ("TrialPaused", "Trial sweep-0 paused at step 1: reached rung 0 (1)", False),
        ("TrialPaused", "Trial sweep-1 paused at step 1: reached rung 0 (1)", False),
        ("TrialPromoted", "Trial sweep-1 promoted to step 3", False),
        ("TrialPaused", "Trial sweep-2 paused at step 1: reached rung 0 (1)", False),
    ]
    metrics.transitions("ml", "sweep", seen)

    # The promoted trial is interrupted once, then trains to the end; the next one crashes.
    driver.exit(1, None, ExitKind.INTERRUPTED)
    driver.decide()
    interrupted = watcher.update(driver.engine)
    assert [c.event()[0] for c in interrupted] == ["TrialInterrupted"]
    for step in (2, 3):
        driver.report(1, step, 0.05)
    driver.now += 60
    driver.exit(1, 0)
    driver.decide()
    running = driver.engine.running()[0].number
    driver.exit(running, 3)
    driver.decide()
    ended = watcher.update(driver.engine)
    events = [c.event() for c in ended]
    assert ("TrialCompleted", "Trial sweep-1 completed: loss=0.05", False) in events
    assert any(e is not None and e[0] == "TrialFailed" and e[2] for e in events)
    metrics.transitions("ml", "sweep", interrupted + ended)

    found = scrape(metrics)
    key = {"namespace": "ml", "experiment": "sweep"}
    assert value(found, "kubetune_trial_promotions_total", **key) == 1
    assert value(found, "kubetune_trials_ended_total", **key, phase="Completed") == 1
    assert value(found, "kubetune_trials_ended_total", **key, phase="Failed") == 1
    assert value(found, "kubetune_trials_ended_total", **key, phase="Stopped") == 0
    assert value(found, "kubetune_trial_duration_seconds_count", **key, phase="Completed") == 1
    completed = driver.engine.trials[1]
    ran = sum(a.ended_at - a.started_at for a in completed.attempts)
    assert value(found, "kubetune_trial_duration_seconds_sum", **key, phase="Completed") == ran
    assert value(found, "kubetune_trial_resource_steps_sum", **key, phase="Completed") == (
        completed.resource
    )
    assert (
        value(found, "kubetune_trial_resource_steps_bucket", **key, phase="Completed", le="3.0")
        == 1
    )


def test_a_replayed_engine_is_not_counted_again() -> None:
    driver = asha_driver()
    driver.report(0, 1, 0.5)
    driver.exit(0, 0)
    driver.decide()
    watcher = TrialWatcher()
    watcher.update(driver.engine)
    # An operator restart: a new engine object, rebuilt from the same history.
    rebuilt = Engine.replay(driver.spec, "sweep", list(driver.engine.history))
    assert watcher.update(rebuilt) == []
    assert rebuilt.trials[0].phase is TrialPhase.PAUSED


def test_cost_node_pools_and_forget() -> None:
    driver = asha_driver()
    metrics = Metrics(process_metrics=False)
    metrics.add_source(lambda: [ExperimentView("ml", "sweep", driver.engine)])
    key = {"namespace": "ml", "experiment": "sweep"}
    found = scrape(metrics)
    assert value(found, "kubetune_experiment_max_cost_usd", **key) == 10.0
    assert value(found, "kubetune_experiment_cost_usd", **key) == 0.0  # the engine's, so far
    metrics.observe_cost("ml", "sweep", 9.5)
    metrics.observe_node_pool("a100", desired=3, current=2, maximum=4, pending_pods=1)
    metrics.observe_spot_interruption("a100")
    metrics.reconcile_error("resync", TimeoutError())
    metrics.start_experiment("ml", "sweep")
    metrics.report_answered("ml", "sweep", "pause", 0.004)
    found = scrape(metrics)
    assert value(found, "kubetune_experiment_cost_usd", **key) == 9.5
    assert value(found, "kubetune_node_pool_desired_nodes", pool="a100") == 3
    assert value(found, "kubetune_node_pool_current_nodes", pool="a100") == 2
    assert value(found, "kubetune_node_pool_max_nodes", pool="a100") == 4
    assert value(found, "kubetune_node_pool_pending_pods", pool="a100") == 1
    assert value(found, "kubetune_node_pool_interruptions_total", pool="a100") == 1
    assert value(found, "kubetune_reconcile_errors_total", handler="resync", error="TimeoutError")
    assert value(found, "kubetune_decisions_total", **key, decision="pause") == 1
    assert value(found, "kubetune_decisions_total", **key, decision="stop") == 0
    assert value(found, "kubetune_report_decision_latency_seconds_bucket", **key, le="0.005") == 1

    metrics.forget("ml", "sweep")
    metrics.forget("ml", "sweep")  # twice is fine
    found = scrape(metrics)
    assert matching(found, "kubetune_decisions_total") == {}
    assert matching(found, "kubetune_report_decision_latency_seconds_count") == {}
    assert value(found, "kubetune_experiment_cost_usd", **key) == 0.0  # the engine's again


def test_labels_are_bounded_no_trial_names() -> None:
    driver = asha_driver()
    for number, loss in ((0, 0.9), (1, 0.1), (2, 0.8)):
        driver.report(number, 1, loss)
        driver.exit(number, 0)
        driver.decide()
    metrics = Metrics(process_metrics=False)
    metrics.add_source(lambda: [ExperimentView("ml", "sweep", driver.engine)])
    watcher = TrialWatcher()
    watcher.update(driver.engine)
    metrics.transitions("ml", "sweep", watcher.update(driver.engine))
    allowed = {
        "namespace",
        "experiment",
        "phase",
        "decision",
        "code",
        "handler",
        "error",
        "pool",
        "le",
        "version",
        "objective",
        "goal",
        "algorithm",
        "scheduler",
        "resource",
        "node_pool",
    }
    for name, labels in scrape(metrics):
        names = {label for label, _ in labels}
        assert names <= allowed, (name, names)
        assert not any(v.startswith("sweep-") for _, v in labels), (name, labels)


def test_exposition_passes_promtool_check_metrics(promtool: str) -> None:
    driver = asha_driver()
    driver.report(0, 1, 0.3)
    metrics = Metrics()
    metrics.add_source(lambda: [ExperimentView("ml", "sweep", driver.engine)])
    metrics.start_experiment("ml", "sweep")
    metrics.report_answered("ml", "sweep", "pause", 0.01)
    metrics.report_refused(401)
    metrics.observe_node_pool("a100", 1, 1, 4, 0)
    metrics.observe_cost("ml", "sweep", 1.25)
    metrics.observe_spot_interruption("a100")
    metrics.reconcile_error("pod", ValueError())
    result = check_metrics(promtool, generate_latest(metrics.registry).decode())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result


async def test_the_report_endpoint_times_decisions_and_counts_refusals() -> None:
    spec = make_spec(budget={"maxTrials": 1, "parallelTrials": 1})
    driver = Driver(spec, name="timed")
    driver.decide()
    engine = driver.engine
    tokens = TokenAuthority(b"k" * 32, "/timed")

    async def handle(report: Report) -> Verdict:
        trial = engine.trial_by_name(report.trial)
        return engine.report(trial.number, report.attempt, report.step, report.metrics, 0.0)

    observer = observability.Observer()
    assert observer.metrics is not None
    registry = observer.metrics.registry
    key = {"namespace": "", "experiment": "timed"}

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    before = (
        sample("kubetune_reports_received_total", **key),
        sample("kubetune_decisions_total", **key, decision="continue"),
        sample("kubetune_report_decision_latency_seconds_count", **key),
        sample("kubetune_reports_refused_total", code="401"),
    )
    server = ReportServer.single(
        tokens, handle, lambda: (t.name for t in engine.trials), "timed", observer=observer
    )
    url = await server.start()
    try:
        body = {"trial": "timed-0", "attempt": 1, "step": 1, "metrics": {"loss": 1.0}}
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {tokens.token_for('timed-0')}"}
            async with session.post(f"{url}/v1/reports", json=body, headers=headers) as response:
                assert response.status == 200
            headers = {"Authorization": "Bearer nope"}
            async with session.post(f"{url}/v1/reports", json=body, headers=headers) as response:
                assert response.status == 401
            async with session.get(f"{url}/metrics") as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                text = await response.text()
    finally:
        await server.stop()
    after = (
        sample("kubetune_reports_received_total", **key),
        sample("kubetune_decisions_total", **key, decision="continue"),
        sample("kubetune_report_decision_latency_seconds_count", **key),
        sample("kubetune_reports_refused_total", code="401"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 1]
    assert "kubetune_report_decision_latency_seconds_bucket" in text


async def test_local_metrics_server_serves_the_run() -> None:
    spec = make_spec(budget={"maxTrials": 2, "parallelTrials": 2})
    driver = Driver(spec, name="local")
    driver.decide()
    observer = observability.Observer()
    assert observer.metrics is not None
    served = await observer.serve_local("local", lambda: driver.engine, 0)
    assert isinstance(served.server, MetricsServer) and served.url is not None
    try:
        async with aiohttp.ClientSession() as session, session.get(served.url) as response:
            text = await response.text()
        found = samples(text)
        assert (
            value(found, "kubetune_trials", namespace="", experiment="local", phase="Running") == 2
        )
    finally:
        await served.stop()
    found = samples(generate_latest(observer.metrics.registry).decode())
    assert matching(found, "kubetune_trials", experiment="local") == {}


async def test_a_busy_metrics_port_is_a_clear_error() -> None:
    observer = observability.Observer()
    served = await observer.serve_local("a", lambda: Engine(make_spec(), "a"), 0)
    try:
        with pytest.raises(observability.MetricsUnavailable, match="--metrics-port"):
            await observer.serve_local("b", lambda: Engine(make_spec(), "b"), served.server.port)
    finally:
        await served.stop()


def test_json_logs_name_the_experiment(capsys: pytest.CaptureFixture[str]) -> None:
    formatter = JsonFormatter()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    log = logging.getLogger("kubetune.test.json")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        bind_log_context("ml", "sweep")
        log.info("trial %s paused", "sweep-1")
        log.warning("explicit", extra={"namespace": "other", "experiment": "exp"})
        log.info(
            "kopf", extra={"k8s_ref": {"namespace": "ns", "name": "e", "kind": "HPOExperiment"}}
        )
        bind_log_context(None, None)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [set(line) >= {"time", "level", "logger", "message"} for line in lines] == [True] * 4
    first = lines[0]
    assert first["message"] == "trial sweep-1 paused" and first["level"] == "INFO"
    assert (first["namespace"], first["experiment"], first["logger"]) == (
        "ml",
        "sweep",
        "kubetune.test.json",
    )
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert (lines[1]["namespace"], lines[1]["experiment"]) == ("other", "exp")
    assert (lines[2]["namespace"], lines[2]["experiment"]) == ("ns", "e")
    assert "namespace" not in lines[3] and "RuntimeError: boom" in lines[3]["exception"]


def test_finite_best_only() -> None:
    driver = asha_driver()
    driver.report(0, 1, math.nan)  # fails the trial; never the best
    metrics = Metrics(process_metrics=False)
    metrics.add_source(lambda: [ExperimentView("ml", "sweep", driver.engine)])
    found = scrape(metrics)
    assert matching(found, "kubetune_experiment_best_objective_value") == {}


def test_a_pause_and_a_promotion_between_two_looks_are_both_seen() -> None:
    driver = asha_driver()
    watcher = TrialWatcher()
    watcher.update(driver.engine)
    for number, loss in ((0, 0.9), (1, 0.1), (2, 0.8)):
        driver.report(number, 1, loss)
        driver.exit(number, 0)
        driver.decide()
    # sweep-1 paused, was promoted and runs again (attempt 2): one look sees it all.
    assert driver.engine.trials[1].phase is TrialPhase.RUNNING
    changes = watcher.update(driver.engine)
    assert [(c.change.value, c.trial.name) for c in changes] == [
        ("paused", "sweep-0"),
        ("paused", "sweep-1"),
        ("promoted", "sweep-1"),
        ("paused", "sweep-2"),
    ]
    assert watcher.update(driver.engine) == []
