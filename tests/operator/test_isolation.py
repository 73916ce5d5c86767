"""One experiment whose API calls fail stalls no other (issue 14, item 6).

The API server itself refuses every HPOTrial of the experiment `blocked` (a
ValidatingAdmissionPolicy, as a broken admission webhook or a policy would), so each of
its steps fails at its first write. Another experiment in the same namespace must still
complete on time, and the failing one must be counted, logged and retried with a backoff
that doubles (kubetune.operator.resync), not hammered or given up on.
"""

from __future__ import annotations

import base64
import http.server
import itertools
import json
import re
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from kubetune.names import LABEL_EXPERIMENT, LABEL_TRIAL
from tests.operator.harness import (
    GPU_NODE_TAINTS,
    OperatorProcess,
    apply,
    experiment,
    get,
    status,
    trials,
    wait_finished,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

BLOCKED = "blocked"
HANGING = "hanging"
WEBHOOK_TIMEOUT = 20  # seconds the API server waits on the webhook before it refuses


@pytest.fixture
def refused(control_plane: Any, installed: Any, namespace: str) -> Iterator[str]:
    """A policy that refuses the creation of `blocked`'s HPOTrials in `namespace` only."""
    name = f"kubetune-test-refuse-{namespace}"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["kubetune.dev"],
                        "apiVersions": ["*"],
                        "operations": ["CREATE"],
                        "resources": ["hpotrials"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": f"object.spec.experiment != '{BLOCKED}'",
                    "message": "refused by the test's policy",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    for document in (policy, binding):
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(document))
    probe = {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "HPOTrial",
        "metadata": {"name": f"{BLOCKED}-probe"},
        "spec": {"experiment": BLOCKED, "number": 0, "params": {}},
    }

    def in_force() -> bool:
        # Policies take effect asynchronously: wait until a creation is refused.
        result = control_plane.kubectl(
            "create",
            "-n",
            namespace,
            "--dry-run=server",
            "-f",
            "-",
            input=json.dumps(probe),
            check=False,
        )
        return result.returncode != 0 and "refused by the test's policy" in result.stderr

    wait_for("the policy to be in force", in_force, 30)
    try:
        yield name
    finally:
        control_plane.kubectl(
            "delete",
            "validatingadmissionpolicybinding,validatingadmissionpolicy",
            name,
            "--ignore-not-found",
            check=False,
        )


def test_an_experiment_whose_writes_are_refused_stalls_no_other(
    control_plane: Any,
    namespace: str,
    refused: str,
    operator: OperatorProcess,
    process_node_factory: Any,
) -> None:
    process_node_factory(gpus=4, taints=GPU_NODE_TAINTS)
    apply(control_plane, namespace, experiment(BLOCKED, max_trials=4, parallel=2))
    apply(control_plane, namespace, experiment("healthy", max_trials=4, parallel=2))
    began = time.monotonic()
    done = wait_finished(control_plane, namespace, "healthy", operator, timeout=120)
    took = time.monotonic() - began
    assert done["phase"] == "Succeeded", done
    assert done["trialsCompleted"] + done["trialsStopped"] == 4, done

    # The blocked experiment made nothing and ran nothing, and its steps keep failing,
    # each failure logged on one line with a wait that doubles.
    assert not [t for t in trials(control_plane, namespace) if t["spec"]["experiment"] == BLOCKED]
    blocked = status(control_plane, namespace, BLOCKED)
    assert blocked.get("phase") in (None, "Pending", "Running") and not blocked.get("trialsDone")
    pattern = re.compile(
        rf"resync of {namespace}/{BLOCKED} failed \((\d+) in a row; next try in (\d+) s\)"
    )

    def failures() -> list[tuple[int, int]]:
        found = pattern.findall(operator.log_path.read_text(errors="replace"))
        return [(int(n), int(wait)) for n, wait in found]

    wait_for(
        "two failed resyncs of the blocked experiment",
        lambda: len(failures()) >= 2,
        60,
        operator.log_tail,
    )
    seen = failures()
    assert [n for n, _ in seen] == list(range(1, len(seen) + 1)), seen
    assert all(b == 2 * a for (_, a), (_, b) in itertools.pairwise(seen)), seen
    with urllib.request.urlopen(f"{operator.endpoint}/metrics", timeout=10) as response:
        counted = [
            line
            for line in response.read().decode().splitlines()
            if line.startswith("kubetune_reconcile_errors")
        ]
    resync_errors = sum(float(line.rsplit(" ", 1)[1]) for line in counted if "resync" in line)
    assert resync_errors >= 2, counted
    print(f"healthy experiment done in {took:.1f} s beside a blocked one; failures {seen}")


class Hang(http.server.BaseHTTPRequestHandler):
    """An admission webhook that never answers in time (the API server gives up)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(WEBHOOK_TIMEOUT + 2)
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class Delay(http.server.BaseHTTPRequestHandler):
    """An admission webhook that allows, after DELAY_SECONDS (a slow API server)."""

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        time.sleep(DELAY_SECONDS)
        answer = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": review["request"]["uid"], "allowed": True},
        }
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


DELAY_SECONDS = 10


def hang_webhook(
    control_plane: Any,
    namespace: str,
    rule: dict[str, Any],
    expression: str,
    handler: type[http.server.BaseHTTPRequestHandler] = Hang,
) -> Iterator[str]:
    """A webhook on the calls `rule` names in `namespace` whose object matches
    `expression` (CEL), that hangs until the API server times it out and refuses (or, with
    `handler=Delay`, allows after a while)."""
    name = f"kubetune-test-hang-{namespace}"
    cert, key = control_plane.issue_serving_cert("hang-webhook")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    webhook = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "hang.kubetune.dev",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": WEBHOOK_TIMEOUT,
                "clientConfig": {
                    "url": f"https://127.0.0.1:{server.server_address[1]}/validate",
                    "caBundle": base64.b64encode(control_plane.ca.cert_pem).decode(),
                },
                "rules": [{"apiVersions": ["*"], **rule}],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "matchConditions": [{"name": "hanging", "expression": expression}],
            }
        ],
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(webhook))
    try:
        yield name
    finally:
        control_plane.kubectl(
            "delete", "validatingwebhookconfiguration", name, "--ignore-not-found", check=False
        )
        server.shutdown()


@pytest.fixture
def hanging(control_plane: Any, installed: Any, namespace: str) -> Iterator[str]:
    """Every creation of `hanging`'s HPOTrials hangs, then is refused."""
    rule = {"apiGroups": ["kubetune.dev"], "operations": ["CREATE"], "resources": ["hpotrials"]}
    yield from hang_webhook(
        control_plane, namespace, rule, f"object.spec.experiment == '{HANGING}'"
    )


@pytest.fixture
def slow_deletes(control_plane: Any, installed: Any, namespace: str) -> Iterator[str]:
    """Every deletion of `hanging`'s trial pods hangs, then is refused (a slow delete, as
    a stuck finalizer webhook or an overloaded API server makes one)."""
    rule = {"apiGroups": [""], "operations": ["DELETE"], "resources": ["pods"]}
    expression = f"oldObject.metadata.labels['{LABEL_EXPERIMENT}'] == '{HANGING}'"
    yield from hang_webhook(control_plane, namespace, rule, expression)


def test_an_experiment_whose_calls_hang_stalls_no_other(
    control_plane: Any,
    namespace: str,
    hanging: str,
    operator: OperatorProcess,
    process_node_factory: Any,
) -> None:
    """Many calls of one experiment hang at once (40 trials sampled together): the
    operator's threads for API calls must not all wait on them."""
    process_node_factory(gpus=4, taints=GPU_NODE_TAINTS)
    apply(control_plane, namespace, experiment(HANGING, max_trials=40, parallel=40))
    time.sleep(2)  # its first step is under way, its creations hanging
    apply(control_plane, namespace, experiment("healthy", max_trials=4, parallel=2))
    began = time.monotonic()
    done = wait_finished(control_plane, namespace, "healthy", operator, timeout=120)
    took = time.monotonic() - began
    assert done["phase"] == "Succeeded", done
    assert not [t for t in trials(control_plane, namespace) if t["spec"]["experiment"] == HANGING]
    print(f"healthy experiment done in {took:.1f} s beside one whose calls hang")
    # Alone it takes about 7 s here; its calls waiting behind the hanging ones, 20 s more.
    assert took < WEBHOOK_TIMEOUT, f"healthy took {took:.1f} s beside a hanging experiment"
    # The hanging one's calls did hang, and failed when the API server gave up on them.
    wait_for(
        "the hanging experiment's failed resync in the log",
        lambda: (
            f"resync of {namespace}/{HANGING} failed (1 in a row"
            in operator.log_path.read_text(errors="replace")
        ),
        WEBHOOK_TIMEOUT + 15,
        operator.log_tail,
    )


def first_trial_meets_target(document: dict[str, Any]) -> dict[str, Any]:
    """Trial 0 reports as usual and meets the objective's target at its first report
    (loss <= 3); every other trial only holds its pod (a cheap process)."""
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    reporter = " ".join(container["command"])
    container["command"] = [
        "sh",
        "-c",
        f'if [ "$KUBETUNE_TRIAL" = {HANGING}-0 ]; then exec {reporter}; else exec sleep 300; fi',
    ]
    document["spec"]["objective"]["target"] = 10.0
    return document


def test_an_experiment_whose_pod_deletions_hang_stalls_no_other(
    control_plane: Any,
    namespace: str,
    slow_deletes: str,
    operator: OperatorProcess,
    process_node_factory: Any,
) -> None:
    """Katib #2725: a reconciler blocked deleting trials. Here `hanging` runs 40 trials;
    one reports and meets the objective's target at once, and the stops of the other 39
    (each a pod deletion) hang: more calls than the operator has threads for API calls.
    Another experiment must still finish on time."""
    process_node_factory(gpus=44, taints=GPU_NODE_TAINTS)
    # One trial reports; the other 39 only hold their pods (a cheap process each).
    slow = first_trial_meets_target(experiment(HANGING, max_trials=40, parallel=40, sleep=1.0))
    apply(control_plane, namespace, slow)

    def stopped() -> int:
        events = get(control_plane, namespace, "events")["items"]
        # An Event may stand for several (operator/eventbudget.py): its count says how many.
        return sum(e.get("count") or 1 for e in events if e["reason"] == "TrialStopped")

    wait_for("the target reached and 39 stops under way", lambda: stopped() >= 39, 90)
    apply(control_plane, namespace, experiment("healthy", max_trials=4, parallel=2))
    began = time.monotonic()
    done = wait_finished(control_plane, namespace, "healthy", operator, timeout=120)
    took = time.monotonic() - began
    assert done["phase"] == "Succeeded", done
    print(f"healthy experiment done in {took:.1f} s beside one whose deletions hang")
    assert took < WEBHOOK_TIMEOUT, f"healthy took {took:.1f} s beside hanging deletions"
    # The deletions did hang: the stopped trials' pods were still there meanwhile.
    pods = get(control_plane, namespace, "pods")["items"]
    held = [p for p in pods if p["metadata"]["labels"].get(LABEL_EXPERIMENT) == HANGING]
    assert len(held) >= 39, len(held)


POD_CREATION = {"apiGroups": [""], "operations": ["CREATE"], "resources": ["pods"]}


def trial_pod_is(trial: str) -> str:
    """CEL: the object is a pod of trial `trial`."""
    labels = "object.metadata.labels"
    return (
        f"has(object.metadata.labels) && '{LABEL_TRIAL}' in {labels} && "
        f"{labels}['{LABEL_TRIAL}'] == '{trial}'"
    )


@pytest.fixture
def slow_third_pod(control_plane: Any, installed: Any, namespace: str) -> Iterator[str]:
    """Creating the pod of trial `hanging-2` hangs, then is refused."""
    yield from hang_webhook(control_plane, namespace, POD_CREATION, trial_pod_is(f"{HANGING}-2"))


@pytest.fixture
def delayed_second_pod(control_plane: Any, installed: Any, namespace: str) -> Iterator[str]:
    """Creating the pod of trial `hanging-1` takes DELAY_SECONDS, then succeeds."""
    yield from hang_webhook(
        control_plane, namespace, POD_CREATION, trial_pod_is(f"{HANGING}-1"), Delay
    )


TIME_LIMIT = 60  # seconds: after trial 0's reports, while trial 2's creation still fails

# Trial 0 reports every half second and journals when each answer came and how long it
# took; trial 1 reports once and ends, so its slot goes to trial 2, whose pod creation
# hangs for WEBHOOK_TIMEOUT seconds inside one of the experiment's steps.
JOURNALING_TRIAL = """
import sys, time
import kubetune_trial as kt
if not kt.trial_info().trial.endswith("-0"):
    kt.report(1, loss=1.0)
    sys.exit(0)
with open(sys.argv[1], "a") as journal:
    for step in range(1, 81):
        time.sleep(0.5)
        began = time.monotonic()
        kt.report(step, loss=1.0 / step)
        journal.write(f"{time.time():.3f} {time.monotonic() - began:.3f}\\n")
        journal.flush()
"""


def test_a_report_does_not_wait_for_its_experiments_slow_step(
    control_plane: Any,
    namespace: str,
    slow_third_pod: str,
    operator: OperatorProcess,
    process_node_factory: Any,
    tmp_path: Path,
) -> None:
    """A step holds the experiment's lock through its writes and creations (here a pod
    creation that hangs 20 s). Reports change the engine without an await, so they must
    not wait for it: before, every report of the experiment waited for the step, and at
    200 running trials (bench/scale.py's open loop) that was a p99 of seconds."""
    process_node_factory(gpus=3, taints=GPU_NODE_TAINTS)
    journal = tmp_path / "answers.journal"
    document = experiment(
        HANGING,
        command=["python", "-c", JOURNALING_TRIAL, str(journal)],
        max_trials=3,
        parallel=2,
        scheduler={"name": "none"},
    )
    # Trial 2's pod is never created (a webhook time-out is a 500: transient, tried again
    # with back-off); the time limit stops it, a launch that never made its pod.
    document["spec"]["budget"]["maxDuration"] = f"{TIME_LIMIT}s"
    apply(control_plane, namespace, document)
    wait_for(
        "trial 0's 80 reports",
        lambda: journal.exists() and len(journal.read_text().splitlines()) >= 80,
        120,
        operator.log_tail,
    )
    third = [t for t in trials(control_plane, namespace) if t["metadata"]["name"].endswith("-2")]
    assert third, "trial 2 was never launched"
    hang_began = _epoch(third[0]["metadata"]["creationTimestamp"])
    log = operator.log_path.read_text(errors="replace")
    assert "failed calling webhook" in log
    # A pod creation that failed (a 500) is tried again, not left for a restart to find.
    assert f"launching {HANGING}-2 failed" in log, operator.log_tail()
    answers = [tuple(map(float, line.split())) for line in journal.read_text().splitlines()]
    during = [took for at, took in answers if hang_began + 2 < at < hang_began + 18]
    slowest = max(took for _, took in answers)
    print(f"{len(answers)} reports, {len(during)} during the hang, slowest {slowest:.2f} s")
    # At a report every 0.5 s, about 30 in the hang's window; none while the step held them.
    assert len(during) >= 10, (len(during), answers)
    assert slowest < 5.0, answers
    # Stopped while its creation was failing, its attempt ends (no pod's end would end it).
    done = wait_finished(control_plane, namespace, HANGING, operator, timeout=TIME_LIMIT + 60)
    third = [t for t in trials(control_plane, namespace) if t["metadata"]["name"].endswith("-2")]
    assert third[0]["status"]["phase"] == "Stopped", (third[0]["status"], done)


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def test_a_trial_stopped_while_its_pod_is_created_keeps_no_pod(
    control_plane: Any,
    namespace: str,
    delayed_second_pod: str,
    operator: OperatorProcess,
    process_node_factory: Any,
) -> None:
    """Launches are carried out in the background (operator/launching.py): a stop of a
    trial whose pod is still being created must delete it after it exists, not before
    (a deletion first finds nothing, and the pod created a moment later runs on)."""
    process_node_factory(gpus=2, taints=GPU_NODE_TAINTS)
    # Trial 0 meets the objective's target at its first report: the experiment ends and
    # stops trial 1, whose pod creation takes DELAY_SECONDS.
    document = first_trial_meets_target(
        experiment(HANGING, max_trials=2, parallel=2, scheduler={"name": "none"})
    )
    apply(control_plane, namespace, document)
    done = wait_finished(control_plane, namespace, HANGING, operator, timeout=60)
    assert done["phase"] == "Succeeded", done

    def second_pods() -> list[dict[str, Any]]:
        pods = get(control_plane, namespace, "pods")["items"]
        return [p for p in pods if p["metadata"]["labels"].get(LABEL_TRIAL) == f"{HANGING}-1"]

    def second_scheduled() -> bool:
        events = get(control_plane, namespace, "events")["items"]
        return any(
            e["reason"] == "Scheduled" and e["involvedObject"]["name"].startswith(f"{HANGING}-1")
            for e in events
        )

    # Created after the stop was decided (it may be deleted before any poll sees it).
    wait_for("trial 1's pod scheduled", second_scheduled, DELAY_SECONDS + 20, operator.log_tail)
    wait_for(
        "trial 1's pod deleted",
        lambda: all(p["metadata"].get("deletionTimestamp") for p in second_pods()),
        30,
        operator.log_tail,
    )
