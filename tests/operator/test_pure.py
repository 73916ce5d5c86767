"""The operator's pure parts: pod builder, pod outcomes, history storage."""

from __future__ import annotations

import json
import math

from kubetune.engine import Engine
from kubetune.events import ExitKind, Reported, TrialLaunched, to_record
from kubetune.operator import gaps, store
from kubetune.operator.outcomes import Refusal, api_message, attempt_outcome, refusal
from kubetune.operator.pods import owned_by, token_secret, trial_pod
from kubetune.operator.status import restoring_patch
from kubetune.schedulers import make_scheduler
from kubetune.schedulers.base import is_milestone
from kubetune.spec import parse_experiment
from kubetune.trialenv import AttemptContext
from kubetune.trials import Decision, TrialPhase, Verdict
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
    # Trial 3's key of its experiment's first token block.
    assert env["KUBETUNE_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "digits-mlp-kubetune-tokens-0",
        "key": "digits-mlp-3",
    }
    later = trial_pod(spec, "team", context(trial="digits-mlp-700"), trial_uid="uid-700")
    (token,) = [e for e in later["spec"]["containers"][0]["env"] if e["name"] == "KUBETUNE_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"] == {
        "name": "digits-mlp-kubetune-tokens-2",  # 700 // 256
        "key": "digits-mlp-700",
    }
    assert TOKEN not in json.dumps(pod)
    assert pod["spec"]["restartPolicy"] == "Never"


def test_a_token_block_secret_holds_each_trials_token_under_its_name() -> None:
    tokens = {f"digits-mlp-{n}": f"token-{n}" for n in range(256, 512)}
    secret = token_secret("team", "digits-mlp", 1, tokens, "digits-mlp-300", "uid-300", "uid-e")
    assert secret["metadata"]["name"] == "digits-mlp-kubetune-tokens-1"
    assert secret["stringData"] == tokens
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


def test_an_exit_0_after_the_pods_deletion_was_asked_for_is_an_interruption() -> None:
    """`kubectl delete pod` (or a drain, or the garbage collector) sends SIGTERM; a
    script that then breaks out of its loop and exits 0 has not finished its trial."""
    deleted = pod("Succeeded", exit_code=0)
    deleted["metadata"].update(
        deletionTimestamp="2026-12-02T06:00:30Z", deletionGracePeriodSeconds=30
    )
    terminated = deleted["status"]["containerStatuses"][0]["state"]["terminated"]
    terminated["finishedAt"] = "2026-12-02T06:00:02Z"  # 2 s after the deletion was asked
    outcome = attempt_outcome(deleted, deleted=False)
    assert outcome is not None and outcome.kind is ExitKind.INTERRUPTED
    # Finished before anyone asked to delete it: a completion, deleted afterwards.
    terminated["finishedAt"] = "2026-12-02T05:59:58Z"
    outcome = attempt_outcome(deleted, deleted=False)
    assert outcome is not None and (outcome.kind, outcome.exit_code) == (ExitKind.EXITED, 0)


def reported(step: int, attempt: int = 1, decision: Decision = Decision.CONTINUE, rung=None):
    return Reported(3, attempt, step, {"loss": 1 / step}, Verdict(decision), rung, 0.0)


def test_compact_keeps_decisions_rungs_milestones_and_attempt_bounds() -> None:
    events = [TrialLaunched(3, 1, False, 27, 0.0)]
    events += [reported(s, rung=0 if s == 1 else None) for s in range(1, 301)]
    events += [reported(301, decision=Decision.PAUSE, rung=1)]
    events += [TrialLaunched(3, 2, True, 900, 0.0)]
    events += [reported(s, attempt=2) for s in range(302, 601)]
    records = [store.encode(seq, e) for seq, e in enumerate(events)]
    kept = store.compact(records, is_milestone, limit=200)
    assert len(kept) == 200
    steps = {(r["attempt"], r["step"]) for r in kept if r["type"] == "Reported"}
    assert {(1, 1), (1, 301), (2, 302), (2, 600)} <= steps
    milestones = [s for s in range(1, 601) if s < 100 or s % 10 == 0]
    assert {s for _, s in steps} >= set(milestones)
    assert sum(r["type"] == "TrialLaunched" for r in kept) == 2
    assert [r["seq"] for r in kept] == sorted(r["seq"] for r in kept)
    # More essential records than the limit: all of them are kept (the milestones, the
    # pause at 301, attempt 2's first report at 302, the two launches), nothing else.
    assert len(store.compact(records, is_milestone, limit=100)) == len(milestones) + 2 + 2


def test_compaction_keeps_what_the_experiment_s_scheduler_reads() -> None:
    """The store asks the policy: median stopping keeps its milestones; ASHA, which only
    reads rung reports (marked with their rung), leaves every plain report optional."""
    median = make_scheduler(
        make_spec(scheduler={"name": "median", "resource": "step", "maxResource": 2000}), None
    )
    asha = make_scheduler(
        make_spec(scheduler={"name": "asha", "resource": "step", "maxResource": 300}), None
    )
    assert [s for s in (5, 99, 100, 105, 110, 1000, 1010) if median.must_keep(s)] == [
        5,
        99,
        100,
        110,
        1000,
    ]
    assert not any(asha.must_keep(s) for s in (1, 5, 100))
    records = [store.encode(seq, reported(s)) for seq, s in enumerate(range(1, 301), start=1)]
    kept = {r["step"] for r in store.compact(records, asha.must_keep, limit=30)}
    assert len(kept) == 30 and {1, 300} <= kept
    assert not set(range(1, 100)) <= kept  # milestones are not ASHA's to keep


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
        records if owner is None else store.compact(records, live.engine.scheduler.must_keep)
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


# ----- kubetune owns its objects (issue 11) -------------------------------------------------


def as_the_api_server_keeps_it(records: list[dict]) -> list[dict]:
    """Nulls pruned, whole floats as integers (Go's JSON), through JSON text."""
    return json.loads(json.dumps(store.canonical(records)))


def stored_histories(
    signer: store.HistorySigner, trials: int = 3, finish: bool = True
) -> tuple[list[list[dict]], Engine]:
    """The experiment's and each trial's history, as the operator files them."""
    spec = make_spec(budget={"maxTrials": trials, "parallelTrials": trials})
    driver = Driver(spec)
    driver.decide()
    for number in range(trials):
        driver.report(number, 1, 0.5 + number)
        driver.exit(number, 0)
    if finish:
        driver.decide()
    histories: list[list[dict]] = [[] for _ in range(trials + 1)]
    for seq, event in enumerate(driver.engine.history):
        owner = store.trial_number_of(event)
        # Each made once all before it were durable (operator/gaps.py).
        record = signer.sign({**store.encode(seq, event), gaps.DURABLE_FIELD: seq})
        histories[0 if owner is None else owner + 1].append(record)
    return [as_the_api_server_keeps_it(h) for h in histories], driver.engine


def test_history_records_carry_a_mac_that_survives_the_api_server() -> None:
    signer = store.HistorySigner(b"k" * 32, "team/exp/uid-1")
    histories, engine = stored_histories(signer)
    checked = store.check_histories(histories, signer)
    assert checked.refused == [0, 0, 0, 0] and not checked.legacy
    events = [e for _, e in store.merge_histories(checked.histories)]
    assert Engine.replay(engine.spec, "exp", events).counts() == engine.counts()
    # Another key, or the same name recreated (another UID): none of them is valid.
    for other in (
        store.HistorySigner(b"j" * 32, "team/exp/uid-1"),
        store.HistorySigner(b"k" * 32, "team/exp/uid-2"),
    ):
        assert store.check_histories(histories, other).refused == [len(h) for h in histories]


def test_forged_and_unsigned_records_are_refused_and_never_replayed() -> None:
    signer = store.HistorySigner(b"k" * 32, "team/exp/uid-1")
    histories, engine = stored_histories(signer)
    trial_1 = histories[2]
    report = next(r for r in trial_1 if r["type"] == "Reported")
    forged_value = {**report, "metrics": {"loss": -999.0}}  # a MAC copied, content changed
    made_up = {k: v for k, v in {**report, "step": 2}.items() if k != "mac"}
    histories[2] = [r for r in trial_1 if r is not report] + [forged_value, made_up]
    checked = store.check_histories(histories, signer)
    assert checked.refused == [0, 0, 2, 0]
    events = [e for _, e in store.merge_histories(checked.histories)]
    replayed = Engine.replay(engine.spec, "exp", events)
    assert replayed.trials[1].values == {}  # the real report was replaced: it is gone too
    assert all(t.value != -999.0 for t in replayed.trials)


def test_an_experiment_written_before_macs_is_accepted_once_and_signed() -> None:
    signer = store.HistorySigner(b"k" * 32, "team/exp/uid-1")
    histories, _ = stored_histories(signer)
    # v0.1.0 wrote neither MACs nor format versions.
    unsigned = [
        [{k: v for k, v in r.items() if k not in ("mac", "v")} for r in h] for h in histories
    ]
    checked = store.check_histories(unsigned, signer)
    assert checked.legacy and checked.refused == [0, 0, 0, 0]
    assert all(signer.valid(r) for h in checked.histories for r in h)
    # Once anything is signed, an unsigned record is a forged one.
    mixed = [histories[0], *unsigned[1:]]
    assert store.check_histories(mixed, signer).refused == [0, *map(len, unsigned[1:])]


def test_a_trial_whose_history_is_gone_is_planned_again_and_the_rest_replays() -> None:
    signer = store.HistorySigner(b"k" * 32, "team/exp/uid-1")
    histories, engine = stored_histories(signer, trials=4, finish=False)
    del histories[2]  # trial 1's HPOTrial deleted while the operator was down
    merged = store.merge_histories(histories)
    events, made = store.repair(merged, make_scheduler(engine.spec, None))
    assert [plan.number for _, plan in made] == [1]
    replayed = Engine.replay(engine.spec, "exp", (e for _, e in events))
    assert [t.name for t in replayed.trials] == ["exp-0", "exp-1", "exp-2", "exp-3"]
    assert replayed.trials[1].phase is TrialPhase.SAMPLING  # it runs again
    assert [t.value for t in replayed.trials[2:]] == [2.5, 3.5]
    # Stored with the trial, the plan made is found again and not made twice.
    histories.insert(2, [signer.sign(store.encode(seq, plan)) for seq, plan in made])
    again, made_again = store.repair(
        store.merge_histories(histories), make_scheduler(engine.spec, None)
    )
    assert made_again == [] and [e for _, e in again] == [e for _, e in events]


def test_a_pod_the_api_server_refuses_fails_its_trial_with_the_message() -> None:
    spec = make_spec(budget={"maxTrials": 3, "parallelTrials": 1, "maxFailedTrials": 1})
    driver = Driver(spec)
    driver.decide()
    assert driver.exit(0, None, ExitKind.REFUSED)
    trial = driver.engine.trials[0]
    assert trial.phase is TrialPhase.FAILED
    assert trial.reason == "pod refused: "  # the shell passes the API's message
    engine = driver.engine
    assert engine.attempt_ended(0, 1, ExitKind.REFUSED, None, 0.0, "x") is False
    driver.decide()  # counted toward maxFailedTrials (1): one more and it is over
    assert engine.attempt_ended(1, 1, ExitKind.REFUSED, None, 0.0, "cpu: quantities must...")
    assert engine.trials[1].reason == "pod refused: cpu: quantities must..."
    driver.decide()
    assert driver.finished is not None and driver.finished.reason == "TooManyFailedTrials"


def test_pod_refusals_and_their_messages() -> None:
    quota = 'pods "x" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1'
    assert refusal(403, quota) is Refusal.QUOTA
    assert refusal(403, "violates PodSecurity restricted") is Refusal.INVALID
    assert refusal(400, "quantities must match") is Refusal.INVALID
    assert refusal(422, "Invalid value") is Refusal.INVALID
    for transient in (409, 429, 500, 503, 504):
        assert refusal(transient, "") is None
    body = json.dumps({"kind": "Status", "message": "m" * 5000, "code": 400})
    assert api_message(body) == "m" * 1000 + "..."
    assert api_message("<html>", "Bad Request") == "Bad Request"


def test_a_pod_deleted_by_hand_is_an_interruption() -> None:
    deleted = pod("Failed", exit_code=143)
    deleted["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    outcome = attempt_outcome(deleted, deleted=False)
    assert outcome is not None and outcome.kind is ExitKind.INTERRUPTED
    assert outcome.message == "pod deleted (exit code 143)"
    # Not deleted: a crash with the same code is the code's failure.
    crashed = attempt_outcome(pod("Failed", exit_code=143), deleted=False)
    assert crashed is not None and crashed.kind is ExitKind.EXITED


def test_token_secret_outlives_its_hpotrial_being_put_back() -> None:
    secret = token_secret("team", "digits-mlp", 0, {}, "digits-mlp-3", "uid-3", "uid-exp")
    owners = secret["metadata"]["ownerReferences"]
    assert [(o["kind"], o["uid"], o["controller"]) for o in owners] == [
        ("HPOTrial", "uid-3", True),
        ("HPOExperiment", "uid-exp", False),
    ]


def test_a_status_written_by_someone_else_is_replaced_whole_not_merged() -> None:
    # A merge patch keeps what it does not name: every key the forger added is nulled.
    live = {
        "phase": "Failed",
        "value": -999,
        "conditions": [{"type": "Ready", "reason": "Forged"}],
        "studyAttrs": {"forged": 1, "kept": 2},
        "bestParams": {"lr": 0.1, "extra": "x"},
        "history": [{"seq": 0}],
    }
    ours = {
        "phase": "Succeeded",
        "value": 0.5,
        "studyAttrs": {"kept": 2},
        "bestParams": {"lr": 0.1},
        "history": [],
        "node": None,
    }
    patch = restoring_patch(live, ours)
    assert patch == {
        **ours,
        "conditions": None,
        "studyAttrs": {"forged": None, "kept": 2},
        "bestParams": {"lr": 0.1, "extra": None},
    }

    def merge(target: object, change: object) -> object:  # RFC 7386
        if not isinstance(change, dict):
            return change
        result = dict(target) if isinstance(target, dict) else {}
        for key, value in change.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = merge(result.get(key), value)
        return result

    assert store.canonical(merge(live, patch)) == store.canonical(ours)
    assert restoring_patch(None, ours) == ours


def test_stripping_every_mac_does_not_make_a_history_legacy() -> None:
    signer = store.HistorySigner(b"k" * 32, "team/exp/uid-1")
    histories, _ = stored_histories(signer)
    stripped = [[{k: v for k, v in r.items() if k != "mac"} for r in h] for h in histories]
    checked = store.check_histories(stripped, signer)
    # Format version 1 records were only ever written with a MAC: all refused, none signed.
    assert not checked.legacy and checked.refused == [len(h) for h in histories]
    assert checked.histories == [[], [], [], []]


def test_an_object_under_the_operator_s_name_is_its_own_only_with_an_owner_reference() -> None:
    secret = token_secret("team", "exp", 0, {"exp-3": TOKEN}, "exp-3", "uid-3", "uid-exp")
    assert owned_by(secret, {"uid-3", "uid-exp"})
    # Put back under a new UID: the experiment still owns it.
    assert owned_by(secret, {"uid-new", "uid-exp"})
    squatted = {"metadata": {"name": "exp-kubetune-tokens-0"}}  # a user's, made first
    assert not owned_by(squatted, {"uid-3", "uid-exp"})
    foreign = {"metadata": {"ownerReferences": [{"uid": "someone-else", "controller": True}]}}
    assert not owned_by(foreign, {"uid-3"})


def test_compaction_bounds_a_history_of_big_reports_in_bytes() -> None:
    # 450 reports of 63 metrics with 128-character names: 4 MB of history under the
    # record limit alone; an HPOTrial above etcd's limit is never written again.
    signer = store.HistorySigner(b"k" * 32, "team/exp/uid-1")
    names = [f"{i:03d}" + "m" * 125 for i in range(62)]
    events = [TrialLaunched(3, 1, False, 450, 0.0)]
    for step in range(1, 451):
        metrics = {"loss": 1 / step, **{name: float(step) for name in names}}
        decision = Decision.STOP if step == 450 else Decision.CONTINUE
        events.append(Reported(3, 1, step, metrics, Verdict(decision), None, 0.0))
    records = [signer.sign(store.encode(seq, e)) for seq, e in enumerate(events)]

    def objective_only(record: dict) -> dict:
        return signer.sign({**record, "metrics": {"loss": record["metrics"]["loss"]}})

    kept = store.compact(records, lambda step: step % 10 == 0, shrink=objective_only)
    size = len(json.dumps(kept, separators=(",", ":")))
    assert size <= store.MAX_TRIAL_HISTORY_BYTES, size
    assert all(signer.valid(r) for r in kept)
    reports = [r for r in kept if r["type"] == "Reported"]
    # What decisions read stays: the milestones, the first and the last report (whole).
    assert {10 * k for k in range(1, 46)} | {1, 450} <= {r["step"] for r in reports}
    assert reports[-1] == records[-1]
    assert all(r["metrics"]["loss"] == 1 / r["step"] for r in reports)
    events_kept = [e for _, e in store.merge_histories([kept])]
    assert events_kept[-1].metrics == events[-1].metrics
    # Small reports are left as they were.
    small = [store.encode(seq, e) for seq, e in enumerate([reported(s) for s in range(1, 50)])]
    assert store.compact(small, is_milestone, shrink=objective_only) == small


def test_signed_records_taken_away_are_found_missing_unless_compaction_dropped_them() -> None:
    signer = store.HistorySigner(b"k" * 32, "team/exp/uid-1")
    histories, _ = stored_histories(signer)
    assert gaps.find_holes(histories).missing == gaps.find_holes(histories).lost == []
    # Compaction drops reports between an attempt's first and last: not missing.
    events = [TrialLaunched(3, 1, False, 27, 0.0)] + [reported(s) for s in range(1, 600)]
    records = [store.encode(seq, e) for seq, e in enumerate(events)]
    kept = store.compact(records, is_milestone, limit=200)
    assert len(kept) < len(records)
    assert gaps.find_holes([kept]).missing == gaps.find_holes([kept]).lost == []
    # A signed record deleted (each left is valid, so no MAC tells): found missing.
    trial_1 = histories[2]
    last_report = [r for r in trial_1 if r["type"] == "Reported"][-1]
    holed = [*histories[:2], [r for r in trial_1 if r is not last_report], *histories[3:]]
    assert store.check_histories(holed, signer).refused == [0, 0, 0, 0]
    assert gaps.find_holes(holed).missing == [(last_report["seq"], last_report["seq"])]
    launch = next(r for r in histories[1] if r["type"] == "TrialLaunched")
    no_launch = [histories[0], [r for r in histories[1] if r is not launch], *histories[2:]]
    assert gaps.find_holes(no_launch).missing == [(launch["seq"], launch["seq"])]
