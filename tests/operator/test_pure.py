"""The operator's pure parts: pod builder, pod outcomes, history storage."""

from __future__ import annotations

import json
import math

from kubetune.engine import Engine
from kubetune.events import ExitKind, Reported, TrialLaunched, to_record
from kubetune.operator import store
from kubetune.operator.outcomes import attempt_outcome
from kubetune.operator.pods import token_secret, trial_pod
from kubetune.spec import parse_experiment
from kubetune.trialenv import AttemptContext
from kubetune.trials import Decision, Verdict
from tests.engine.helpers import Driver, make_spec
from tests.unit.test_spec import valid

TOKEN = "s3cr3t-token-value"


def context(**overrides) -> AttemptContext:
    values = {
        "experiment": "digits-mlp",
        "trial": "digits-mlp-3",
        "attempt": 2,
        "params": {"lr": 0.01, "hidden": 64, "optimizer": "adam"},
        "resume": True,
        "endpoint": "http://op:8080/ns/team/exp/digits-mlp",
        "token": TOKEN,
        "checkpoint_uri": "s3://bucket/kt/digits-mlp/digits-mlp-3",
    }
    values.update(overrides)
    return AttemptContext(**values)


def test_trial_pod_injects_parameters_labels_and_the_token_by_reference() -> None:
    spec = parse_experiment(valid()).spec
    pod = trial_pod(spec, "team", context(), trial_uid="uid-3")
    meta = pod["metadata"]
    assert meta["name"] == "digits-mlp-3-a2"
    assert meta["labels"]["kubetune.dev/experiment"] == "digits-mlp"
    assert meta["labels"]["kubetune.dev/trial"] == "digits-mlp-3"
    assert meta["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
    assert meta["ownerReferences"][0]["uid"] == "uid-3"
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["python", "examples/digits.py"]
    assert container["args"] == ["--lr=0.01", "--hidden=64"]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    env = {e["name"]: e for e in container["env"]}
    assert json.loads(env["KUBETUNE_PARAMS"]["value"]) == context().params
    assert env["KUBETUNE_RESUME"]["value"] == "1"
    assert env["KUBETUNE_ATTEMPT"]["value"] == "2"
    assert env["KUBETUNE_MAX_RESOURCE"]["value"] == "27"
    assert env["KUBETUNE_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "digits-mlp-3-token"
    assert TOKEN not in json.dumps(pod)
    assert pod["spec"]["restartPolicy"] == "Never"


def test_token_secret_holds_the_token_and_is_owned_by_the_trial() -> None:
    secret = token_secret("team", "digits-mlp", "digits-mlp-3", "uid-3", TOKEN)
    assert secret["stringData"] == {"token": TOKEN}
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "HPOTrial"


def pod(
    phase: str, reason: str = "", exit_code: int | None = None, disrupted: bool = False
) -> dict:
    status: dict = {"phase": phase, "reason": reason, "conditions": []}
    if exit_code is not None:
        status["containerStatuses"] = [
            {"state": {"terminated": {"exitCode": exit_code, "reason": "Error"}}}
        ]
    if disrupted:
        status["conditions"].append(
            {"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet"}
        )
    return {"metadata": {"name": "p"}, "status": status}


def test_pod_outcomes() -> None:
    assert attempt_outcome(pod("Running"), deleted=False) is None
    assert attempt_outcome(pod("Pending"), deleted=False) is None
    done = attempt_outcome(pod("Succeeded", exit_code=0), deleted=False)
    assert done is not None and (done.kind, done.exit_code) == (ExitKind.EXITED, 0)
    crashed = attempt_outcome(pod("Failed", exit_code=3), deleted=False)
    assert crashed is not None and (crashed.kind, crashed.exit_code) == (ExitKind.EXITED, 3)
    for evicted in (pod("Failed", "Evicted"), pod("Failed", exit_code=137, disrupted=True)):
        outcome = attempt_outcome(evicted, deleted=False)
        assert outcome is not None and outcome.kind is ExitKind.INTERRUPTED
    gone = attempt_outcome(pod("Running"), deleted=True)
    assert gone is not None and gone.kind is ExitKind.INTERRUPTED


def reported(step: int, attempt: int = 1, decision: Decision = Decision.CONTINUE, rung=None):
    return Reported(3, attempt, step, {"loss": 1 / step}, Verdict(decision), rung, 0.0)


def test_compact_keeps_decisions_rungs_milestones_and_attempt_bounds() -> None:
    events = [TrialLaunched(3, 1, False, 27, 0.0)]
    events += [reported(s, rung=0 if s == 1 else None) for s in range(1, 301)]
    events += [reported(301, decision=Decision.PAUSE, rung=1)]
    events += [TrialLaunched(3, 2, True, 900, 0.0)]
    events += [reported(s, attempt=2) for s in range(302, 601)]
    records = [store.encode(seq, e) for seq, e in enumerate(events)]
    kept = store.compact(records, limit=200)
    assert len(kept) == 200
    steps = {(r["attempt"], r["step"]) for r in kept if r["type"] == "Reported"}
    assert {(1, 1), (1, 301), (2, 302), (2, 600)} <= steps
    milestones = [s for s in range(1, 601) if s < 100 or s % 10 == 0]
    assert {s for _, s in steps} >= set(milestones)
    assert sum(r["type"] == "TrialLaunched" for r in kept) == 2
    assert [r["seq"] for r in kept] == sorted(r["seq"] for r in kept)
    # More essential records than the limit: all of them are kept (the milestones, the
    # pause at 301, attempt 2's first report at 302, the two launches), nothing else.
    assert len(store.compact(records, limit=100)) == len(milestones) + 2 + 2


def test_median_decides_the_same_after_a_restart_from_compacted_histories() -> None:
    """Three trials complete 1200 steps (losses 1, 2, 3 + 100/s); a fourth (1.99 + 100/s,
    then 0.6 worse from step 651) is at step 640 when the operator restarts from the stored,
    compacted histories. The restarted engine decides the rest of its reports exactly as the
    one that never stopped: it stops the trial at the same step, for the same reason."""
    spec = make_spec(
        scheduler={"name": "median", "resource": "step", "maxResource": 1200, "minTrials": 3},
        budget={"maxTrials": 4, "parallelTrials": 1},
    )
    live = Driver(spec)
    for number in range(3):
        live.decide()
        for step in range(1, 1201):
            live.report(number, step, 1.0 + number + 100 / step)
        assert live.exit(number)
    live.decide()

    def loss(step: int) -> float:
        return 1.99 + 100 / step + (0.6 if step > 650 else 0.0)

    for step in range(1, 641):
        assert live.report(3, step, loss(step)).decision is Decision.CONTINUE

    by_owner: dict[int | None, list] = {}
    for seq, event in enumerate(live.engine.history):
        by_owner.setdefault(store.trial_number_of(event), []).append(store.encode(seq, event))
    stored = [
        records if owner is None else store.compact(records)
        for owner, records in by_owner.items()
    ]
    assert sum(map(len, stored)) < len(live.engine.history) / 2  # it was compacted
    events = [event for _, event in store.merge_histories(json.loads(json.dumps(stored)))]
    restarted = Driver(spec, engine=Engine.replay(spec, "exp", events), now=live.now)

    def rest(driver: Driver) -> list[tuple[int, str]]:
        answers = []
        for step in range(641, 1201):
            verdict = driver.report(3, step, loss(step))
            answers.append((step, verdict.reason))
            if verdict.decision is not Decision.CONTINUE:
                return answers
        return answers

    ours, theirs = rest(live), rest(restarted)
    assert ours == theirs
    assert ours[-1][0] < 1200 and "worse than median" in ours[-1][1]


def test_histories_merge_in_sequence_order_and_round_trip() -> None:
    a = [store.encode(0, TrialLaunched(0, 1, False, None, 1.0)), store.encode(2, reported(1))]
    b = [store.encode(1, TrialLaunched(1, 1, False, None, 1.5))]
    nan = Reported(1, 1, 1, {"loss": math.nan}, Verdict(Decision.STOP), None, 2.0)
    c = [store.encode(3, nan)]
    stored = json.loads(json.dumps([a, b, c]))
    merged = store.merge_histories(stored)
    assert [seq for seq, _ in merged] == [0, 1, 2, 3]
    assert merged[0][1] == TrialLaunched(0, 1, False, None, 1.0)
    assert math.isnan(merged[3][1].metrics["loss"])
    assert to_record(merged[2][1]) == to_record(reported(1))


def test_a_recreated_experiment_of_the_same_name_gets_new_tokens() -> None:
    from kubetune.operator.controller import ExperimentController, OperatorConfig

    document = valid()
    spec = parse_experiment(document).spec
    config = OperatorConfig(endpoint_url="http://op:8080", token_key=b"k" * 32)

    def controller(uid: str) -> ExperimentController:
        body = {**document, "metadata": {"name": "exp", "namespace": "team", "uid": uid}}
        return ExperimentController(None, config, None, body, spec)  # type: ignore[arg-type]

    first, recreated, again = controller("uid-1"), controller("uid-2"), controller("uid-1")
    token = first.tokens.token_for("exp-0")
    assert again.tokens.verify(token, "exp-0")  # a restarted operator derives the same
    assert not recreated.tokens.verify(token, "exp-0")
    assert recreated.tokens.owner(token, ["exp-0", "exp-1"]) is None
