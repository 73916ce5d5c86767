"""The operator's overhead under load: report->decision latency, trial turnaround, memory.

Everything runs on loopback, in this one script:

1. A real control plane (``tests.cluster.controlplane.ControlPlane``: etcd, kube-apiserver,
   kube-controller-manager, kube-scheduler), ``kubectl apply -k manifests/``, the operator's
   Deployment deleted, and the operator started as a local process
   (``tests.operator.harness.OperatorProcess``) with the kubeconfig of the manifests'
   ServiceAccount, as the end-to-end tests run it. kwok (``tests.cluster.kwok.Kwok``)
   manages fake GPU nodes (8 ``nvidia.com/gpu`` each, tainted ``nvidia.com/gpu``) with
   room for every trial pod of the parallel budget at once.
2. One HPOExperiment: ``maxTrials`` N (default 400), ``parallelTrials`` N/2, algorithm
   ``random`` (kubetune's ``random`` is Optuna's ``RandomSampler``; the operator still
   rebuilds an in-memory study of every earlier trial for each suggestion, in its worker
   process), scheduler ``asha`` (resource ``step``, minResource 1, maxResource 9,
   reductionFactor 3: rungs 1, 3, 9). kwok pods run nothing, so **this script plays the
   trials**: it watches the experiment's pods, and for each Running pod it reads the pod's
   env (``KUBETUNE_ENDPOINT``, ``KUBETUNE_TRIAL``, ``KUBETUNE_ATTEMPT``, ``KUBETUNE_PARAMS``,
   ``KUBETUNE_MAX_RESOURCE``), derives the trial's token from the operator's key
   (``kubetune.tokens.TokenAuthority``, scope ``<namespace>/<experiment>/<uid>``), and reports one
   step at a time as the SDK does (``POST {KUBETUNE_ENDPOINT}/v1/reports``, Bearer token,
   body per docs/trial-protocol.md, retry with back-off after a timeout, a connection
   error, a 5xx or a 429). The objective is synthetic:
   ``loss = (x - 0.3)^2 + (y + 0.2)^2 + 1 / step``. A resumed attempt goes on from the step
   after the trial's last report. When the decision is ``pause`` or ``stop``, the script
   ends the pod as a kubelet would: its status, through the ``status`` subresource with the
   admin client, becomes Succeeded with a terminated container (exit code 0).
3. Measured:
   * **report->decision latency**: the HTTP round trip of each report, retries included
     (what a trial waits for);
   * **trial turnaround**: from the moment a pod's Succeeded status is stored (the PATCH's
     answer) to the arrival, on this script's pod watch, of the ADDED event of a pod the
     operator creates for the freed slot (creationTimestamp has a resolution of one
     second). Pods that fill the initial ``parallelTrials`` slots (attempt 1 of trials
     0..parallel-1) are not refills; every other pod is (a new trial or a promoted one).
     Ends and refills are paired in order (the i-th refill with the i-th end), counting
     only refills up to the first pod of the last trial: until then the operator refills
     every freed slot, so the pairing has no gaps (its mean is exact whatever the pairing;
     its percentiles assume slots are refilled in the order they were freed). In the tail
     of the experiment freed slots are refilled only by promotions, so the tail is left
     out;
   * the operator process's **peak RSS** (``VmHWM`` from /proc, checked against sampled
     ``VmRSS``); its sampler worker's peak RSS and the CPU seconds of every process during
     the run are printed too, to show where the time goes.

The summary ends with exactly one line
``RESULT report_to_decision_p99_ms=<x> trial_turnaround_p50_ms=<y> operator_rss_mb=<z>``.

    .venv/bin/python bench/operator_overhead.py               # 400 trials, 200 in parallel
    .venv/bin/python bench/operator_overhead.py --trials 200  # 200 trials, 100 in parallel
    .venv/bin/python bench/operator_overhead.py --quick       # 20 trials, 10 in parallel

Needs the control plane's binaries (``tests/cluster/build.sh``, a no-op when built).
The operator runs from the ``kubetune`` this script imports (the working tree). To measure
a commit while the tree is being edited::

    git archive HEAD operator | tar -x -C /tmp/snap
    PYTHONPATH=/tmp/snap/operator .venv/bin/python bench/operator_overhead.py
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import random
import re
import shutil
import ssl
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `tests` is a package of the repository, not installed

from kubetune.tokens import TokenAuthority, experiment_scope  # noqa: E402
from kubetune_trial.client import RetryPolicy  # noqa: E402
from tests.cluster.controlplane import ControlPlane  # noqa: E402
from tests.cluster.kwok import Kwok  # noqa: E402
from tests.cluster.process_node import Taint  # noqa: E402
from tests.operator.harness import GPU_TAINT, OperatorProcess  # noqa: E402

EXPERIMENT = "overhead"
GROUP_VERSION = "kubetune.dev/v1alpha1"
LABEL_EXPERIMENT = "kubetune.dev/experiment"
LABEL_TRIAL = "kubetune.dev/trial"
LABEL_ATTEMPT = "kubetune.dev/attempt"
GPUS_PER_NODE = 8
MAX_RESOURCE = 9
# The SDK's defaults (trial_image/kubetune_trial/client.py), read from it: the total was
# hand-copied as 60 s against the SDK's 300, and in a 10,000-trial run whose restarted
# operator took about a minute to rebuild, 33 players gave up during it and left their
# pods running, so the experiment could never end (the SDK would have waited).
TRY_TIMEOUT = RetryPolicy.max_try_timeout
TOTAL_TIMEOUT = RetryPolicy.total_timeout
INITIAL_BACKOFF = RetryPolicy.initial_backoff
MAX_BACKOFF = RetryPolicy.max_backoff


# ----- small helpers -------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def describe_ms(values: list[float]) -> str:
    if not values:
        return "no samples"
    ms = [v * 1000 for v in values]
    parts = [f"p{p} {percentile(ms, p):.1f}" for p in (50, 90, 99)]
    return f"{', '.join(parts)}, max {max(ms):.1f}, mean {sum(ms) / len(ms):.1f} ms (n={len(ms)})"


def proc_status_kb(pid: int, field_name: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            children += [int(c) for c in (task / "children").read_text().split()]
    return children


_DURATION = re.compile(r"^apiserver_request_duration_seconds_(sum|count)\{(.*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')
MUTATING = ("POST", "PATCH", "PUT", "DELETE", "APPLY")
WRITERS = {
    ("POST", "hpotrials"): "operator",
    ("PATCH", "hpotrials/status"): "operator",
    ("PATCH", "hpoexperiments/status"): "operator",
    ("POST", "secrets"): "operator",
    ("POST", "pods"): "operator",
    ("DELETE", "pods"): "operator",
    ("POST", "events"): "operator (Trial*, Experiment*) and kube-scheduler (Scheduled)",
    ("PATCH", "pods/status"): "kwok (Running) and this script (Succeeded)",
    ("POST", "pods/binding"): "kube-scheduler",
    ("PATCH", "nodes/status"): "kwok",
}


def request_totals(metrics: str) -> dict[tuple[str, str], list[float]]:
    """(verb, resource[/subresource]) -> [count, seconds] from kube-apiserver's /metrics."""
    totals: dict[tuple[str, str], list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for line in metrics.splitlines():
        found = _DURATION.match(line)
        if not found:
            continue
        labels = dict(_LABEL.findall(found.group(2)))
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        key = (labels.get("verb", ""), resource)
        totals[key][0 if found.group(1) == "count" else 1] += float(found.group(3))
    return totals


def child_name(pid: int) -> str:
    """The operator's children: multiprocessing's resource tracker and the sampler worker."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"child {pid}"
    return f"resource tracker {pid}" if b"resource_tracker" in command else f"sampler worker {pid}"


def experiment_document(trials: int, parallel: int) -> dict[str, Any]:
    container = {
        "name": "trial",
        "image": "kubetune/trial:latest",
        "command": ["python", "train.py"],
        "args": ["--x={{params.x}}", "--y={{params.y}}"],
        "resources": {"limits": {"nvidia.com/gpu": 1}},
    }
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "HPOExperiment",
        "metadata": {"name": EXPERIMENT},
        "spec": {
            "objective": {"metric": "loss", "goal": "minimize"},
            "parameters": [
                {"name": "x", "type": "float", "min": -1.0, "max": 1.0},
                {"name": "y", "type": "float", "min": -1.0, "max": 1.0},
            ],
            "algorithm": {"name": "random", "seed": 11},
            "scheduler": {
                "name": "asha",
                "resource": "step",
                "minResource": 1,
                "maxResource": MAX_RESOURCE,
                "reductionFactor": 3,
            },
            "budget": {"maxTrials": trials, "parallelTrials": parallel},
            "trialTemplate": {"spec": {"tolerations": [GPU_TAINT], "containers": [container]}},
        },
    }


def synthetic_loss(params: dict[str, Any], step: int) -> float:
    return (float(params["x"]) - 0.3) ** 2 + (float(params["y"]) + 0.2) ** 2 + 1.0 / step


# ----- the run -------------------------------------------------------------------------


@dataclass
class Run:
    """What the trial players and the pod watch see, with their clocks (time.monotonic)."""

    namespace: str
    trials: int
    parallel: int
    authority: TokenAuthority
    deadline: float
    report_latency: list[float] = field(default_factory=list)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    decisions: collections.Counter[str] = field(default_factory=collections.Counter)
    retries: int = 0
    failed_reports: int = 0
    ends: list[float] = field(default_factory=list)
    end_errors: int = 0
    refills: list[float] = field(default_factory=list)
    first_pods: list[float] = field(default_factory=list)
    last_new_trial_at: float | None = None
    pods_seen: set[str] = field(default_factory=set)
    players: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    last_step: dict[str, int] = field(default_factory=dict)
    watch_reconnects: int = 0
    player_errors: list[str] = field(default_factory=list)
    in_flight: int = 0  # reports sent and not answered yet
    in_flight_samples: list[int] = field(default_factory=list)
    playing_samples: list[int] = field(default_factory=list)
    rss_samples_kb: list[int] = field(default_factory=list)
    worker_hwm_kb: dict[int, int] = field(default_factory=dict)
    requests_before: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    requests_after: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    final_status: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)


class Bench:
    def __init__(self, cp: ControlPlane, run: Run, operator_pid: int, step_seconds: float) -> None:
        self.cp = cp
        self.run = run
        self.operator_pid = operator_pid
        self.step_seconds = step_seconds
        self.reporters = asyncio.Semaphore(run.parallel)
        assert cp.workdir is not None
        pki = cp.workdir / "pki"
        self.ssl = ssl.create_default_context(cafile=str(cp.ca_file))
        self.ssl.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self.kube: aiohttp.ClientSession | None = None
        self.reports: aiohttp.ClientSession | None = None

    # ----- the API server (admin) ------------------------------------------------------

    def _pods_url(self) -> str:
        return f"{self.cp.server}/api/v1/namespaces/{self.run.namespace}/pods"

    async def watch_pods(self) -> None:
        assert self.kube is not None
        selector = f"{LABEL_EXPERIMENT}={EXPERIMENT}"
        version = ""
        while True:
            if not version:
                async with self.kube.get(
                    self._pods_url(), params={"labelSelector": selector}
                ) as response:
                    response.raise_for_status()
                    listed = await response.json()
                version = listed["metadata"]["resourceVersion"]
                for pod in listed["items"]:
                    self._on_pod("ADDED", pod)
            params = {
                "labelSelector": selector,
                "watch": "true",
                "resourceVersion": version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": "240",
            }
            timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
            async with self.kube.get(self._pods_url(), params=params, timeout=timeout) as response:
                response.raise_for_status()
                async for line in response.content:
                    arrived = time.monotonic()
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind, pod = event["type"], event["object"]
                    if kind == "ERROR":
                        version = ""  # 410 Gone: list again
                        break
                    version = pod["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        self._on_pod(kind, pod, arrived)
            self.run.watch_reconnects += 1

    def _on_pod(self, kind: str, pod: dict[str, Any], arrived: float | None = None) -> None:
        run = self.run
        name = pod["metadata"]["name"]
        labels = pod["metadata"].get("labels") or {}
        if kind == "DELETED":
            player = run.players.get(name)
            if player is not None and not player.done():
                player.cancel()
            return
        if name not in run.pods_seen:
            run.pods_seen.add(name)
            at = arrived if arrived is not None else time.monotonic()
            number = int(labels.get(LABEL_TRIAL, "-1").rsplit("-", 1)[-1])
            attempt = int(labels.get(LABEL_ATTEMPT, "0"))
            if attempt == 1 and number < run.parallel:
                run.first_pods.append(at)
            else:
                run.refills.append(at)
            if attempt == 1 and number == run.trials - 1:
                run.last_new_trial_at = at
        phase = (pod.get("status") or {}).get("phase")
        if phase == "Running" and name not in run.players:
            run.players[name] = task = asyncio.create_task(self.play(pod))
            task.add_done_callback(self._player_done)

    def _player_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.run.player_errors.append(repr(task.exception()))

    async def end_pod(self, pod: dict[str, Any]) -> None:
        """What a kubelet writes when the trial's container exits 0."""
        assert self.kube is not None
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        old = pod.get("status") or {}
        started = {
            c["name"]: ((c.get("state") or {}).get("running") or {}).get("startedAt", now)
            for c in old.get("containerStatuses") or []
        }
        containers = [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "started": False,
                "state": {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "startedAt": started.get(c["name"], now),
                        "finishedAt": now,
                    }
                },
            }
            for c in pod["spec"]["containers"]
        ]
        conditions = [
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {
                "type": "Ready",
                "status": "False",
                "reason": "PodCompleted",
                "lastTransitionTime": now,
            },
            {
                "type": "ContainersReady",
                "status": "False",
                "reason": "PodCompleted",
                "lastTransitionTime": now,
            },
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        ]
        body = {
            "status": {
                "phase": "Succeeded",
                "conditions": conditions,
                "containerStatuses": containers,
            }
        }
        url = f"{self._pods_url()}/{pod['metadata']['name']}/status"
        headers = {"Content-Type": "application/merge-patch+json"}
        for tries in range(5):
            async with self.kube.patch(url, data=json.dumps(body), headers=headers) as response:
                if response.status == 200:
                    self.run.ends.append(time.monotonic())
                    return
                if response.status == 404:
                    return
                text = await response.text()
            await asyncio.sleep(0.2 * (tries + 1))
        self.run.end_errors += 1
        print(f"could not end pod {pod['metadata']['name']}: {text[:200]}", file=sys.stderr)

    async def request_totals(self) -> dict[tuple[str, str], list[float]]:
        assert self.kube is not None
        async with self.kube.get(f"{self.cp.server}/metrics") as response:
            response.raise_for_status()
            return request_totals(await response.text())

    async def experiment_status(self) -> dict[str, Any]:
        assert self.kube is not None
        url = (
            f"{self.cp.server}/apis/{GROUP_VERSION}/namespaces/{self.run.namespace}"
            f"/hpoexperiments/{EXPERIMENT}"
        )
        async with self.kube.get(url) as response:
            response.raise_for_status()
            return (await response.json()).get("status") or {}

    # ----- the trials --------------------------------------------------------------------

    async def play(self, pod: dict[str, Any]) -> None:
        """One attempt: report step after step until told to pause or stop, then exit 0."""
        env = {
            e["name"]: e.get("value", "")
            for e in pod["spec"]["containers"][0].get("env", [])
            if "value" in e
        }
        trial, attempt = env["KUBETUNE_TRIAL"], int(env["KUBETUNE_ATTEMPT"])
        params = json.loads(env["KUBETUNE_PARAMS"])
        max_resource = int(env.get("KUBETUNE_MAX_RESOURCE", MAX_RESOURCE))
        url = f"{env['KUBETUNE_ENDPOINT'].rstrip('/')}/v1/reports"
        token = self.run.authority.token_for(trial)
        resume = env.get("KUBETUNE_RESUME") == "1"
        step = self.run.last_step.get(trial, 0) + 1 if resume else 1
        async with self.reporters:
            while step <= max_resource:
                body = {
                    "trial": trial,
                    "attempt": attempt,
                    "step": step,
                    "metrics": {"loss": synthetic_loss(params, step)},
                }
                answer = await self.report(url, token, body)
                if answer is None:
                    return  # refused or never answered: counted; the pod is left running
                self.run.last_step[trial] = step
                decision = answer.get("decision")
                self.run.decisions[str(decision)] += 1
                if decision in ("pause", "stop"):
                    break
                step += 1
                if self.step_seconds:
                    await asyncio.sleep(self.step_seconds)
        await self.end_pod(pod)

    async def report(self, url: str, token: str, body: dict[str, Any]) -> dict[str, Any] | None:
        assert self.reports is not None
        data = json.dumps(body)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.run.in_flight += 1
        try:
            return await self._report(url, data, headers)
        finally:
            self.run.in_flight -= 1

    async def _report(self, url: str, data: str, headers: dict[str, str]) -> dict[str, Any] | None:
        assert self.reports is not None
        start = time.monotonic()
        deadline = min(start + TOTAL_TIMEOUT, self.run.deadline)
        failures = 0
        while True:
            left = deadline - time.monotonic()
            try_timeout = aiohttp.ClientTimeout(total=max(0.05, min(TRY_TIMEOUT, left)))
            retry = False
            try:
                async with self.reports.post(
                    url, data=data, headers=headers, timeout=try_timeout
                ) as response:
                    self.run.statuses[str(response.status)] += 1
                    text = await response.text()
                    if response.status == 200:
                        self.run.report_latency.append(time.monotonic() - start)
                        return dict(json.loads(text))
                    retry = response.status == 429 or response.status >= 500
                    if not retry:
                        self.run.failed_reports += 1
                        print(f"report refused {response.status}: {text[:200]}", file=sys.stderr)
                        return None
            except (TimeoutError, aiohttp.ClientError) as error:
                self.run.statuses[type(error).__name__] += 1
            failures += 1
            self.run.retries += 1
            delay = min(MAX_BACKOFF, INITIAL_BACKOFF * 2 ** (failures - 1))
            delay *= random.uniform(0.5, 1.0)
            if time.monotonic() + delay >= deadline:
                self.run.failed_reports += 1
                return None
            await asyncio.sleep(delay)

    # ----- memory --------------------------------------------------------------------------

    async def sample_memory(self) -> None:
        """Every 0.5 s: the operator's RSS and its children's peaks, and the load we put on."""
        while True:
            self.run.in_flight_samples.append(self.run.in_flight)
            self.run.playing_samples.append(sum(not t.done() for t in self.run.players.values()))
            rss = proc_status_kb(self.operator_pid, "VmRSS")
            if rss is not None:
                self.run.rss_samples_kb.append(rss)
            for child in child_pids(self.operator_pid):
                hwm = proc_status_kb(child, "VmHWM")
                if hwm is not None:
                    self.run.worker_hwm_kb[child] = hwm
            await asyncio.sleep(0.5)

    # ----- all of it -----------------------------------------------------------------------

    async def main(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.run.parallel + 16)
        self.reports = aiohttp.ClientSession(connector=connector)
        self.kube = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.ssl, limit=32),
            timeout=aiohttp.ClientTimeout(total=30),
        )
        self.run.requests_before = await self.request_totals()
        background = [
            asyncio.create_task(self.watch_pods()),
            asyncio.create_task(self.sample_memory()),
        ]
        try:
            while time.monotonic() < self.run.deadline:
                await asyncio.sleep(1.0)
                for task in background:
                    if task.done():
                        task.result()  # the watch died: raise its error
                status = await self.experiment_status()
                if status.get("phase") in ("Succeeded", "Failed"):
                    self.run.final_status = status
                    break
            else:
                self.run.final_status = await self.experiment_status()
            players = [t for t in self.run.players.values() if not t.done()]
            if players:
                await asyncio.wait(players, timeout=10)
            self.run.requests_after = await self.request_totals()
        finally:
            for task in [*background, *self.run.players.values()]:
                task.cancel()
            await asyncio.gather(*background, *self.run.players.values(), return_exceptions=True)
            await self.reports.close()
            await self.kube.close()


# ----- summary ---------------------------------------------------------------------------


def turnarounds(run: Run) -> list[float]:
    cutoff = run.last_new_trial_at if run.last_new_trial_at is not None else math.inf
    refills = sorted(t for t in run.refills if t <= cutoff)
    ends = sorted(run.ends)
    return [made - ended for made, ended in zip(refills, ends, strict=False)]


def api_deltas(run: Run) -> dict[tuple[str, str], tuple[float, float]]:
    deltas = {}
    for key, (count, seconds) in run.requests_after.items():
        before = run.requests_before.get(key, [0.0, 0.0])
        if key[0] in MUTATING and count > before[0]:
            deltas[key] = (count - before[0], seconds - before[1])
    return deltas


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def operator_log_problems(log: Path) -> tuple[int, int, int, list[str]]:
    """Errors, warnings, benign start-up retries, and a few example lines."""
    if not log.exists():
        return 0, 0, 0, []
    lines = log.read_text(errors="replace").splitlines()
    # kopf's first watch of a CRD the API server has just established may hit its watch
    # cache while it initializes (429) and retries: not the operator's doing.
    startup = [line for line in lines if "storage is (re)initializing" in line]
    errors = [
        line for line in lines if (" ERROR " in line or "Traceback" in line) and line not in startup
    ]
    warnings = [line for line in lines if " WARNING " in line]
    return len(errors), len(warnings), len(startup), errors[:5] + warnings[:5]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=400, help="maxTrials (default 400)")
    parser.add_argument(
        "--parallel", type=int, help="parallelTrials (default: half of --trials, at most 200)"
    )
    parser.add_argument("--quick", action="store_true", help="20 trials, 10 in parallel")
    parser.add_argument(
        "--step-seconds",
        type=float,
        default=0.0,
        help="pause between a trial's reports (default 0: as fast as the answers come)",
    )
    parser.add_argument("--timeout", type=float, help="seconds for the experiment to finish")
    parser.add_argument(
        "--keep", action="store_true", help="keep the operator's log and token key (temp dir)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.parallel = 20, 10
    parallel = args.parallel or max(1, min(200, args.trials // 2))
    timeout = args.timeout or (75.0 if args.quick else 1500.0)
    wall_start = time.monotonic()
    setup: dict[str, float] = {}
    workdir = Path(tempfile.mkdtemp(prefix="kubetune-bench-"))
    cp = ControlPlane()
    kwok: Kwok | None = None
    operator: OperatorProcess | None = None
    cpu_start: dict[str, float] = {}
    try:
        t = time.monotonic()
        cp.start()
        setup["control plane"] = time.monotonic() - t
        t = time.monotonic()
        cp.kubectl("apply", "-k", str(ROOT / "manifests"), timeout=120)
        cp.kubectl("delete", "deployment", "kubetune-operator", "-n", "kubetune-system")
        for crd in ("hpoexperiments.kubetune.dev", "hpotrials.kubetune.dev"):
            cp.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        sa_kubeconfig = cp.service_account_kubeconfig("kubetune-system", "kubetune-operator")
        namespace = f"bench-{uuid.uuid4().hex[:6]}"
        cp.kubectl("create", "namespace", namespace)
        setup["manifests"] = time.monotonic() - t
        t = time.monotonic()
        kwok = Kwok(cp).start()
        nodes = math.ceil(parallel / GPUS_PER_NODE)
        kwok.create_nodes(
            nodes,
            prefix="gpu",
            gpus=GPUS_PER_NODE,
            pods=max(110, 4 * GPUS_PER_NODE),
            labels={"kubetune.dev/node-pool": "gpu-spot"},
            taints=[Taint(GPU_TAINT["key"], "true")],
            timeout=120,
        )
        setup[f"kwok, {nodes} nodes x {GPUS_PER_NODE} GPUs"] = time.monotonic() - t
        t = time.monotonic()
        operator = OperatorProcess(sa_kubeconfig, workdir, test_defaults=False).start()
        assert operator.process is not None
        _wait_healthy(operator, timeout=60)
        setup["operator ready"] = time.monotonic() - t

        pids = {"operator": operator.process.pid, "bench (this process)": os.getpid()}
        for name, component in cp.components.items():
            if component.process is not None:
                pids[name] = component.process.pid
        cpu_start = {name: cpu_seconds(pid) or 0.0 for name, pid in pids.items()}
        applied_at = time.monotonic()
        uid = cp.kubectl(
            "apply",
            "-n",
            namespace,
            "-f",
            "-",
            "-o",
            "jsonpath={.metadata.uid}",
            input=json.dumps(experiment_document(args.trials, parallel)),
        ).stdout.strip()
        # Tokens are scoped to the experiment object, UID included (kubetune.tokens).
        authority = TokenAuthority(
            operator.key_file.read_bytes().strip(), experiment_scope(namespace, EXPERIMENT, uid)
        )
        run = Run(namespace, args.trials, parallel, authority, applied_at + timeout)
        run.started = applied_at
        bench = Bench(cp, run, operator.process.pid, args.step_seconds)
        load_start = load_average()
        asyncio.run(bench.main())
        load_end = load_average()
        experiment_seconds = time.monotonic() - run.started

        # Read before stopping anything: /proc vanishes with the processes.
        hwm_kb = proc_status_kb(operator.process.pid, "VmHWM") or 0
        for child in child_pids(operator.process.pid):
            hwm = proc_status_kb(child, "VmHWM")
            if hwm is not None:
                run.worker_hwm_kb[child] = hwm
        children = {p: child_name(p) for p in run.worker_hwm_kb}
        pids.update({name: p for p, name in children.items()})
        cpu = {
            name: (cpu_seconds(pid) or 0.0) - cpu_start.get(name, 0.0) for name, pid in pids.items()
        }
        errors, warnings, startup, examples = operator_log_problems(operator.log_path)
    except BaseException:
        print(f"the operator's log and key are kept in {workdir}", file=sys.stderr)
        raise
    finally:
        if operator is not None:
            operator.stop()
        if kwok is not None:
            kwok.stop(delete_nodes=False)
        cp.stop()

    peak_sampled_kb = max(run.rss_samples_kb, default=0)
    rss_mb = max(hwm_kb, peak_sampled_kb) / 1024
    turnaround = turnarounds(run)
    status = run.final_status
    ok = status.get("phase") == "Succeeded" and bool(run.report_latency and turnaround)
    keep = args.keep or not ok or errors > 0
    print()
    print(
        f"kubetune operator overhead: maxTrials {args.trials}, parallelTrials {parallel}, "
        f"algorithm random (Optuna RandomSampler), scheduler asha "
        f"(step 1..{MAX_RESOURCE}, eta 3), step pause {args.step_seconds:g}s"
    )
    print("setup: " + ", ".join(f"{k} {v:.1f}s" for k, v in setup.items()))
    first = sorted(run.first_pods)
    print(
        f"experiment: {status.get('phase', '?')} ({status.get('reason', '?')}) in "
        f"{experiment_seconds:.1f}s; trials {status.get('trialsTotal')} total, "
        f"{status.get('trialsCompleted')} completed, {status.get('trialsStopped')} stopped, "
        f"{status.get('trialsFailed')} failed; {len(run.pods_seen)} pods"
    )
    if first:
        print(
            f"initial fill: first pod {first[0] - run.started:.1f}s after apply, "
            f"{len(first)}th of {parallel} at {first[-1] - run.started:.1f}s"
        )
    print(
        f"reports: {sum(run.statuses.values())} sent, answers {dict(run.statuses)}, "
        f"decisions {dict(run.decisions)}, retries {run.retries}, "
        f"gave up {run.failed_reports}"
    )
    print(f"report->decision latency: {describe_ms(run.report_latency)}")
    if run.in_flight_samples:
        print(
            f"load offered (sampled every 0.5s): reports in flight mean "
            f"{sum(run.in_flight_samples) / len(run.in_flight_samples):.1f}, max "
            f"{max(run.in_flight_samples)}; trial pods being played (Running, not ended) mean "
            f"{sum(run.playing_samples) / len(run.playing_samples):.1f}, max "
            f"{max(run.playing_samples)} of {parallel} slots"
        )
    print(
        f"trial turnaround (pod Succeeded -> next pod ADDED): {describe_ms(turnaround)}; "
        f"{len(run.ends)} pods ended, {len(run.refills)} refill pods"
    )
    print(
        f"operator peak RSS: {rss_mb:.1f} MB (VmHWM {hwm_kb / 1024:.1f} MB, sampled VmRSS max "
        f"{peak_sampled_kb / 1024:.1f} MB); its children's peak RSS: "
        + (
            ", ".join(f"{children[p]} {kb / 1024:.1f} MB" for p, kb in run.worker_hwm_kb.items())
            or "none"
        )
    )
    print(
        "CPU seconds during the experiment: "
        + ", ".join(
            f"{name} {seconds:.1f}"
            for name, seconds in sorted(cpu.items(), key=lambda item: -item[1])
        )
    )
    print("kube-apiserver writes during the experiment (count, server-side mean latency, by whom):")
    for (verb, resource), (count, seconds) in sorted(
        api_deltas(run).items(), key=lambda item: -item[1][0]
    ):
        who = WRITERS.get((verb, resource), "")
        print(f"  {verb:6} {resource:24} {count:6.0f} {1000 * seconds / count:7.1f} ms  {who}")
    print(f"load average: {load_start} at the start, {load_end} at the end")
    if run.player_errors:
        print(f"trial players crashed: {len(run.player_errors)}, e.g. {run.player_errors[0]}")
    print(
        f"operator log: {errors} errors, {warnings} warnings, {startup} start-up watch "
        "retries" + (f" (kept: {operator.log_path})" if keep else "")
    )
    for line in examples:
        print(f"  {line[:300]}")
    print(f"wall time: {time.monotonic() - wall_start:.1f}s")
    p99 = percentile(run.report_latency, 99) * 1000
    p50 = percentile(turnaround, 50) * 1000
    print(
        f"RESULT report_to_decision_p99_ms={p99:.1f} trial_turnaround_p50_ms={p50:.1f} "
        f"operator_rss_mb={rss_mb:.1f}"
    )
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


def _wait_healthy(operator: OperatorProcess, timeout: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert operator.process is not None
        if operator.process.poll() is not None:
            raise RuntimeError(f"the operator exited:\n{operator.log_tail()}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{operator.endpoint}/healthz", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the operator's endpoint did not answer:\n{operator.log_tail()}")


if __name__ == "__main__":
    raise SystemExit(main())
