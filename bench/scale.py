"""kubetune at scale on the test control plane: issue 14's figures, side by side in one run.

One real control plane (etcd, kube-apiserver, controller manager, scheduler), the
project's manifests, kwok GPU nodes, and the operator as a local process with the
manifests' ServiceAccount, exactly as ``bench/operator_overhead.py`` sets them up; its
trial players (they read each kwok pod's env, derive its token, report as the SDK does
and end the pod as a kubelet would) are reused here. Phases, each experiment in a
namespace of its own (deleted, and gone, before the next phase starts):

1. **scale**: an experiment of ``--trials`` trials (default 10,000), algorithm random,
   ASHA (resource step, minResource 10, maxResource 270, reductionFactor 3: most reports
   fall between rungs), every step reported, ``--parallel`` (200) at once, closed loop
   (a trial reports its next step as soon as the last is answered). When half the trials
   exist (``status.trialsTotal``) the operator is killed (SIGKILL) and started again:
   *rebuild* is the time from the new process's start to its log line "rebuilt from N
   events", *resume* to the first report it answers. At the end every HPOTrial and the
   HPOExperiment are read back: the largest object written (its JSON, KiB).
2. **open loop**: a new experiment, the same scheduler, ``--parallel`` trials each
   reporting once a second (the next report 1 s after the last answer, not as fast as
   answers come), for ``--open-seconds``, measured once every trial has reported: the
   first trials' starts are spread over a first rung's life (10 s), as the trials of an
   experiment that has run a while are at every step, so that the load is steady (a
   first open loop, unless ``--no-open-together``, starts them all in the same second,
   when all 200 reach each rung in the same second: printed, not in the RESULT line):
   report->decision latency (and apart, that of the reports written before their
   answer), trial turnaround
   (a pod's Succeeded status stored -> the next new pod seen on the watch, each new pod
   paired with the oldest end not paired yet), and
   the API writes the operator made per report answered (kube-apiserver's own request
   counters: HPOTrial create and status patches, HPOExperiment status patches, Secret and
   Pod creations and deletions; Events are left out, kube-scheduler writes them too),
   with the API server's own mean time for each.
3. **closed loop**: a new experiment, reports as fast as answers come, for
   ``--closed-seconds``: reports answered per second after a warm-up quarter.
   Then, with the operator stopped, a plain client loop with the same concurrency patches
   HPOTrial statuses (a 20-record history, like a trial's mid-run) for the same time: the
   API server's own throughput for what every report costs today, the physical limit on
   this machine.
4. The operator's peak RSS over the whole run (VmHWM of each operator process).

The last line is
``RESULT operator_rss_mb_10k=<x> largest_object_kib=<y> restart_rebuild_s_10k=<z>
report_p99_ms_open_loop=<w> trial_turnaround_p50_ms_open_loop=<t> api_writes_per_report=<v>
report_throughput_ratio_vs_raw_patch=<u>`` (one line), where z is the resume time
(rebuild included), and the keys keep the names "_10k" whatever ``--trials`` was (the
line above it says the N used). Issue 14's targets: x < 300, y < 256, z < 60, w < 50,
t < 500, v <= 0.3, u >= 2.

    nice .venv/bin/python bench/scale.py                 # 10,000 trials (long)
    nice .venv/bin/python bench/scale.py --trials 2000   # a smaller N, said in the output
    .venv/bin/python bench/scale.py --quick              # smoke: 12 trials, ASHA 1..27, 5 s

Needs the control plane's binaries (``tests/cluster/build.sh``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import random
import shutil
import ssl
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))  # `tests` and the sibling bench are not installed

from operator_overhead import (  # noqa: E402
    EXPERIMENT,
    GPUS_PER_NODE,
    GROUP_VERSION,
    LABEL_ATTEMPT,
    LABEL_TRIAL,
    Bench,
    Run,
    _wait_healthy,
    api_deltas,
    describe_ms,
    experiment_document,
    percentile,
    proc_status_kb,
)

from kubetune.tokens import TokenAuthority, experiment_scope  # noqa: E402
from tests.cluster.controlplane import ControlPlane  # noqa: E402
from tests.cluster.kwok import Kwok  # noqa: E402
from tests.cluster.process_node import Taint  # noqa: E402
from tests.operator.harness import GPU_TAINT, OperatorProcess  # noqa: E402

MIN_RESOURCE, MAX_RESOURCE, REDUCTION = 10, 270, 3
# Writes the operator makes (kube-apiserver's verb and resource[/subresource]).
OPERATOR_WRITES = {
    ("POST", "hpotrials"),
    ("PATCH", "hpotrials/status"),
    ("PUT", "hpotrials/status"),
    ("PATCH", "hpoexperiments/status"),
    ("PUT", "hpoexperiments/status"),
    ("POST", "secrets"),
    ("POST", "pods"),
    ("DELETE", "pods"),
}
RAW_HISTORY = 20
ENDLESS = 100_000  # the CRD's largest maxTrials: the timed phases end long before it
NAMESPACE_GONE_SECONDS = 1800.0
# The open loop's first trials start over one first rung's life (minResource steps of
# 1 s), as the trials of an experiment that has run a while are at every step: started
# in the same second, all 200 reach each rung in the same second, and every second
# spent measures that one burst (measured too, unless --no-open-together, and printed
# as "all started together").
SPREAD_SEED = 14
QUICK_STEP_SECONDS = 0.3  # the quick run's pace in phase 1: trials left to answer after the restart


def document(trials: int, parallel: int, resources: tuple[int, int]) -> dict[str, Any]:
    doc = experiment_document(trials, parallel)
    doc["spec"]["scheduler"] = {
        "name": "asha",
        "resource": "step",
        "minResource": resources[0],
        "maxResource": resources[1],
        "reductionFactor": REDUCTION,
    }
    return doc


def slot_turnarounds(ends: list[float], refills: list[float], since: float) -> list[float]:
    """Each refill pod paired with the oldest pod end not paired yet that came before it
    (a slot freed, then filled); ends and refills before `since` are left out."""
    pending: collections.deque[float] = collections.deque()
    found = []
    timeline = sorted(
        [(t, 0) for t in ends if t >= since] + [(t, 1) for t in refills if t >= since]
    )
    for at, kind in timeline:
        if kind == 0:
            pending.append(at)
        elif pending:
            found.append(at - pending.popleft())
    return found


class PhaseBench(Bench):
    """operator_overhead's Bench with a side task run beside the trial players, and the
    first `run.parallel` trials' starts spread over `spread` seconds (0: all at once)."""

    def __init__(
        self,
        *args: Any,
        side: Callable[[PhaseBench], Awaitable[None]] | None = None,
        spread: float = 0.0,
    ):
        super().__init__(*args)
        self.side = side
        self.spread = spread
        self.starts = random.Random(SPREAD_SEED)
        self.written_ahead: list[float] = []  # latency of answers not marked durable=false
        self.first_reported: set[str] = set()  # the first trials that have reported

    def first_trial(self, name: str) -> bool:
        """Whether trial `name` (`<experiment>-<number>`) is one of the first `parallel`."""
        return 0 <= int(name.rsplit("-", 1)[-1]) < self.run.parallel

    async def report(self, url: str, token: str, body: dict[str, Any]) -> dict[str, Any] | None:
        start = time.monotonic()
        answer = await super().report(url, token, body)
        if answer is not None and answer.get("durable", True):
            self.written_ahead.append(time.monotonic() - start)
        if answer is not None and self.first_trial(body["trial"]):
            self.first_reported.add(body["trial"])
        return answer

    async def play(self, pod: dict[str, Any]) -> None:
        labels = pod["metadata"].get("labels") or {}
        first = self.first_trial(labels.get(LABEL_TRIAL, "-1"))
        if self.spread and labels.get(LABEL_ATTEMPT) == "1" and first:
            await asyncio.sleep(self.starts.uniform(0.0, self.spread))
        await super().play(pod)

    async def main(self) -> None:
        task = asyncio.create_task(self.side(self)) if self.side else None
        try:
            await super().main()
        finally:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


@dataclass
class Figures:
    trials: int
    parallel: int
    resources: tuple[int, int]  # ASHA's minResource and maxResource
    peak_rss_kb: list[int] = field(default_factory=list)
    peak_rss_moments: list[str] = field(default_factory=list)  # "<when> <MB>", in order
    rebuild_s: float = math.nan
    resume_s: float = math.nan
    rebuilt_events: str = "?"
    largest_kib: float = math.nan
    largest_name: str = ""
    scale_seconds: float = math.nan
    scale_phase: str = "?"
    open_latency: list[float] = field(default_factory=list)
    open_turnaround: list[float] = field(default_factory=list)
    open_reports: int = 0
    open_writes: float = math.nan
    open_write_detail: dict[str, float] = field(default_factory=dict)
    closed_rate: float = math.nan
    raw_rate: float = math.nan
    raw_errors: int = 0


class Scale:
    def __init__(self, cp: ControlPlane, operator: OperatorProcess, figures: Figures) -> None:
        self.cp = cp
        self.operator = operator
        self.figures = figures
        assert cp.workdir is not None
        pki = cp.workdir / "pki"
        self.ssl = ssl.create_default_context(cafile=str(cp.ca_file))
        self.ssl.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))

    # ----- helpers -----------------------------------------------------------------------

    def note_rss(self, moment: str) -> None:
        assert self.operator.process is not None
        hwm = proc_status_kb(self.operator.process.pid, "VmHWM")
        if hwm is not None:
            self.figures.peak_rss_kb.append(hwm)
            self.figures.peak_rss_moments.append(f"{moment} {hwm / 1024:.1f}")

    def start_experiment(self, trials: int, parallel: int, deadline: float) -> Run:
        namespace = f"scale-{uuid.uuid4().hex[:6]}"
        self.cp.kubectl("create", "namespace", namespace)
        uid = self.cp.kubectl(
            "apply",
            "-n",
            namespace,
            "-f",
            "-",
            "-o",
            "jsonpath={.metadata.uid}",
            input=json.dumps(document(trials, parallel, self.figures.resources)),
        ).stdout.strip()
        authority = TokenAuthority(
            self.operator.key_file.read_bytes().strip(),
            experiment_scope(namespace, EXPERIMENT, uid),
        )
        run = Run(namespace, trials, parallel, authority, deadline)
        run.started = time.monotonic()
        return run

    def play(
        self,
        run: Run,
        step_seconds: float,
        side: Callable[[PhaseBench], Awaitable[None]] | None,
        moment: str,
        spread: float = 0.0,
    ) -> None:
        assert self.operator.process is not None
        bench = PhaseBench(
            self.cp, run, self.operator.process.pid, step_seconds, side=side, spread=spread
        )
        asyncio.run(bench.main())
        self.note_rss(moment)

    def delete_namespace(self, namespace: str) -> None:
        """Gone before the next phase: the namespace controller's deletions of a phase's
        pods would count as the next one's API writes (apiserver_request_total has no
        user label) and load its API server. 10,000 trials' objects take minutes."""
        start = time.monotonic()
        self.cp.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        deadline = start + NAMESPACE_GONE_SECONDS
        while time.monotonic() < deadline:
            found = self.cp.kubectl("get", "namespace", namespace, "-o", "name", check=False)
            if found.returncode != 0 and "NotFound" in found.stderr:
                print(f"namespace {namespace} gone in {time.monotonic() - start:.0f}s", flush=True)
                return
            time.sleep(2.0)
        raise SystemExit(f"namespace {namespace} still there after {NAMESPACE_GONE_SECONDS:.0f}s")

    def rebuilt_lines(self) -> list[str]:
        text = self.operator.log_path.read_text(errors="replace")
        return [line for line in text.splitlines() if " rebuilt from " in line]

    # ----- phase 1 -----------------------------------------------------------------------

    def scale_phase(self, timeout: float, step_seconds: float) -> str:
        """Phase 1: the whole experiment, the operator killed and restarted at half.

        `step_seconds` paces each trial's reports: with a dozen trials and none, the rest of
        the experiment can end between the side task's polls, leaving nothing to answer
        after the restart (the quick run's figure was then nan).
        """
        figures = self.figures
        run = self.start_experiment(figures.trials, figures.parallel, time.monotonic() + timeout)

        async def restart_at_half(bench: PhaseBench) -> None:
            while bench.kube is None:
                await asyncio.sleep(0.2)
            while True:
                await asyncio.sleep(1.0)
                status = await bench.experiment_status()
                if (status.get("trialsTotal") or 0) >= figures.trials // 2:
                    break
            self.note_rss("before the restart")
            before = len(self.rebuilt_lines())
            await asyncio.to_thread(self.operator.kill)
            # Counted once the old process is gone: its last answers may land meanwhile.
            answered = len(run.report_latency)
            started = time.monotonic()
            await asyncio.to_thread(self.operator.start)
            assert self.operator.process is not None
            bench.operator_pid = self.operator.process.pid
            while math.isnan(figures.rebuild_s) or math.isnan(figures.resume_s):
                await asyncio.sleep(0.05)
                lines = self.rebuilt_lines()
                if math.isnan(figures.rebuild_s) and len(lines) > before:
                    figures.rebuild_s = time.monotonic() - started
                    figures.rebuilt_events = lines[-1].split(" rebuilt from ")[-1]
                if math.isnan(figures.resume_s) and len(run.report_latency) > answered:
                    figures.resume_s = time.monotonic() - started
            self.note_rss("rebuilt and answering")
            await asyncio.sleep(30)
            self.note_rss("30 s later")

        self.play(run, step_seconds, restart_at_half, "after phase 1")
        if math.isnan(figures.rebuild_s) or math.isnan(figures.resume_s):
            raise SystemExit(
                f"the experiment ended ({run.final_status.get('phase')}) before the restarted "
                "operator rebuilt and answered a report: no restart figure"
            )
        figures.scale_seconds = time.monotonic() - run.started
        figures.scale_phase = str(run.final_status.get("phase", "?"))
        figures.largest_kib, figures.largest_name = self.largest_object(run.namespace)
        print(
            f"restart at {figures.trials // 2} trials: rebuilt in {figures.rebuild_s:.1f}s "
            f"({figures.rebuilt_events}), first report answered {figures.resume_s:.1f}s "
            f"after start; largest object: {figures.largest_name} {figures.largest_kib:.1f} KiB",
            flush=True,
        )
        print(
            f"scale: {figures.trials} trials, {figures.parallel} at once: "
            f"{figures.scale_phase} in {figures.scale_seconds:.0f}s, "
            f"{run.final_status.get('trialsTotal')} trials, {len(run.report_latency)} reports "
            f"answered; report latency {describe_ms(run.report_latency)}",
            flush=True,
        )
        return run.namespace

    def largest_object(self, namespace: str) -> tuple[float, str]:
        """The largest HPOTrial or HPOExperiment of the namespace, as JSON (KiB)."""
        largest, name = 0, ""
        for kind in ("hpoexperiments", "hpotrials"):
            # kubectl reads the list in chunks of 200 and prints it whole.
            args = ["get", kind, "-n", namespace, "-o", "json", "--chunk-size=200"]
            for item in json.loads(self.cp.kubectl(*args, timeout=300).stdout)["items"]:
                size = len(json.dumps(item, separators=(",", ":")))
                if size > largest:
                    largest, name = size, f"{kind}/{item['metadata']['name']}"
        return largest / 1024, name

    # ----- phase 2 -----------------------------------------------------------------------

    def open_loop_phase(self, seconds: float, spread: float) -> str:
        """`--parallel` trials reporting once a second for `seconds`; the first trials'
        starts spread over `spread` seconds. Figures of a spread start are the RESULT's."""
        figures = self.figures
        run = self.start_experiment(ENDLESS, figures.parallel, math.inf)
        latency: list[float] = []
        turnaround: list[float] = []
        detail: dict[str, float] = {}

        async def window(bench: PhaseBench) -> None:
            # Measured from the moment each first trial has reported once (with a spread
            # start, the last of them starts `spread` seconds after the first), for `seconds`.
            while len(bench.first_reported) < figures.parallel:
                await asyncio.sleep(0.2)
            run.report_latency.clear()
            bench.written_ahead.clear()
            since = time.monotonic()
            counters = SimpleNamespace(requests_before=await bench.request_totals())
            await asyncio.sleep(seconds)
            counters.requests_after = await bench.request_totals()
            deltas = api_deltas(counters)  # type: ignore[arg-type]
            mine = {f"{v} {r}": d for (v, r), d in deltas.items() if (v, r) in OPERATOR_WRITES}
            detail.update({key: count for key, (count, _) in mine.items()})
            served.update({key: 1000 * s / count for key, (count, s) in mine.items()})
            latency.extend(run.report_latency)
            ahead.extend(bench.written_ahead)
            turnaround.extend(slot_turnarounds(run.ends, run.refills, since))
            run.deadline = time.monotonic()  # ends the bench's loop

        ahead: list[float] = []
        served: dict[str, float] = {}  # the API server's own mean time per write, ms
        run.deadline = time.monotonic() + seconds + spread + 300
        start = f"starts spread over {spread:.0f}s" if spread else "all started together"
        self.play(run, 1.0, window, f"after the open loop ({start})", spread)
        writes = sum(detail.values()) / len(latency) if latency else math.nan
        print(
            f"open loop, {start}: {figures.parallel} trials reporting once a second for "
            f"{seconds:.0f}s: latency {describe_ms(latency)} (reports written before their "
            f"answer: {describe_ms(ahead)}); turnaround {describe_ms(turnaround)}; operator "
            f"writes {detail} for {len(latency)} reports ({writes:.2f} a report); the API "
            f"server's mean time for each (ms): { {k: round(v, 1) for k, v in served.items()} }",
            flush=True,
        )
        if spread:
            figures.open_latency, figures.open_turnaround = latency, turnaround
            figures.open_write_detail, figures.open_reports = detail, len(latency)
            figures.open_writes = writes
        return run.namespace

    # ----- phase 3 -----------------------------------------------------------------------

    def closed_loop_phase(self, seconds: float) -> str:
        figures = self.figures
        run = self.start_experiment(ENDLESS, figures.parallel, math.inf)

        async def window(bench: PhaseBench) -> None:
            while len(run.report_latency) < figures.parallel:
                await asyncio.sleep(0.2)
            await asyncio.sleep(seconds / 4)
            count, start = len(run.report_latency), time.monotonic()
            await asyncio.sleep(seconds)
            figures.closed_rate = (len(run.report_latency) - count) / (time.monotonic() - start)
            run.deadline = time.monotonic()

        run.deadline = time.monotonic() + seconds * 1.25 + 300
        self.play(run, 0.0, window, "after the closed loop")
        print(
            f"closed loop: {figures.parallel} trials reporting as fast as answered: "
            f"{figures.closed_rate:.1f} reports/s",
            flush=True,
        )
        return run.namespace

    async def raw_patches(self, seconds: float) -> None:
        """HPOTrial status patches by a plain client, `parallel` at once, for `seconds`."""
        figures = self.figures
        namespace = f"raw-{uuid.uuid4().hex[:6]}"
        self.cp.kubectl("create", "namespace", namespace)
        base = f"{self.cp.server}/apis/{GROUP_VERSION}/namespaces/{namespace}/hpotrials"
        record = {
            "seq": 1,
            "type": "Reported",
            "v": 1,
            "number": 0,
            "attempt": 1,
            "step": 1,
            "metrics": {"loss": 0.5},
            "verdict": {"decision": "continue", "reason": ""},
            "at": 1.0,
            "mac": "0" * 32,
        }
        done = 0
        connector = aiohttp.TCPConnector(ssl=self.ssl, limit=figures.parallel + 8)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def create(number: int) -> None:
                body = {
                    "apiVersion": GROUP_VERSION,
                    "kind": "HPOTrial",
                    "metadata": {"name": f"raw-{number}"},
                    "spec": {"experiment": "raw", "number": number},
                }
                async with session.post(base, json=body) as response:
                    if response.status >= 300:
                        raise RuntimeError(f"raw HPOTrial: {await response.text()}")

            await asyncio.gather(*(create(n) for n in range(figures.parallel)))
            stop = time.monotonic() + seconds
            headers = {"Content-Type": "application/merge-patch+json"}

            async def patcher(number: int) -> None:
                nonlocal done
                step = 0
                while time.monotonic() < stop:
                    step += 1
                    history = [{**record, "seq": step + i, "step": i} for i in range(RAW_HISTORY)]
                    body = {"status": {"phase": "Running", "value": 1 / step, "history": history}}
                    url = f"{base}/raw-{number}/status"
                    async with session.patch(url, data=json.dumps(body), headers=headers) as r:
                        await r.read()
                        if r.status == 200:
                            done += 1
                        else:
                            figures.raw_errors += 1

            start = time.monotonic()
            await asyncio.gather(*(patcher(n) for n in range(figures.parallel)))
            figures.raw_rate = done / (time.monotonic() - start)
        print(
            f"raw HPOTrial status patches, {figures.parallel} at once, operator stopped: "
            f"{figures.raw_rate:.1f}/s ({figures.raw_errors} errors)",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10_000, help="phase 1's maxTrials")
    parser.add_argument("--parallel", type=int, default=200, help="trials at once")
    parser.add_argument("--open-seconds", type=float, default=60.0)
    parser.add_argument("--closed-seconds", type=float, default=60.0)
    parser.add_argument(
        "--open-together",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="first an open loop whose trials all start in the same second (printed, not in "
        "RESULT; default: on)",
    )
    parser.add_argument("--timeout", type=float, default=3 * 3600.0, help="phase 1's limit")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 12 trials, 6 at once, ASHA 1..27, 5 s"
    )
    args = parser.parse_args(argv)
    resources = (MIN_RESOURCE, MAX_RESOURCE)
    if args.quick:
        args.trials, args.parallel, resources = 12, 6, (1, 27)
        args.open_seconds = args.closed_seconds = 5.0
        args.timeout = 120.0
    figures = Figures(args.trials, args.parallel, resources)
    wall = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="kubetune-scale-"))
    cp = ControlPlane()
    kwok: Kwok | None = None
    operator: OperatorProcess | None = None
    ok = False
    try:
        cp.start()
        cp.kubectl("apply", "-k", str(ROOT / "manifests"), timeout=120)
        cp.kubectl("delete", "deployment", "kubetune-operator", "-n", "kubetune-system")
        for crd in ("hpoexperiments.kubetune.dev", "hpotrials.kubetune.dev"):
            cp.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        kubeconfig = cp.service_account_kubeconfig("kubetune-system", "kubetune-operator")
        kwok = Kwok(cp).start()
        kwok.create_nodes(
            math.ceil(args.parallel / GPUS_PER_NODE),
            prefix="gpu",
            gpus=GPUS_PER_NODE,
            pods=max(110, 4 * GPUS_PER_NODE),
            labels={"kubetune.dev/node-pool": "gpu-spot"},
            taints=[Taint(GPU_TAINT["key"], "true")],
            timeout=120,
        )
        operator = OperatorProcess(kubeconfig, workdir, test_defaults=False).start()
        _wait_healthy(operator, timeout=60)
        print(f"setup done in {time.monotonic() - wall:.0f}s", flush=True)
        scale = Scale(cp, operator, figures)
        scale.delete_namespace(
            scale.scale_phase(args.timeout, QUICK_STEP_SECONDS if args.quick else 0.0)
        )
        if args.open_together:
            scale.delete_namespace(scale.open_loop_phase(args.open_seconds, 0.0))
        spread = resources[0] * 1.0  # a first rung's life at one report a second
        scale.delete_namespace(scale.open_loop_phase(args.open_seconds, spread))
        scale.delete_namespace(scale.closed_loop_phase(args.closed_seconds))
        scale.note_rss("at the end")
        operator.stop()  # the raw loop has the API server to itself
        asyncio.run(scale.raw_patches(args.closed_seconds))
        ok = figures.scale_phase == "Succeeded" and bool(figures.open_latency)
    finally:
        if operator is not None:
            operator.stop()
            if not ok:
                print(f"operator log kept: {operator.log_path}", file=sys.stderr)
        if kwok is not None:
            kwok.stop(delete_nodes=False)
        cp.stop()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)

    rss = max(figures.peak_rss_kb, default=0) / 1024
    p99 = percentile(figures.open_latency, 99) * 1000
    p50 = percentile(figures.open_turnaround, 50) * 1000
    ratio = figures.closed_rate / figures.raw_rate if figures.raw_rate else math.nan
    print(
        f"restart at {args.trials // 2} trials: rebuilt in {figures.rebuild_s:.1f}s "
        f"({figures.rebuilt_events}), first report answered {figures.resume_s:.1f}s after start"
    )
    print(f"largest object: {figures.largest_name} {figures.largest_kib:.1f} KiB")
    print(f"operator peak RSS (MB): {', '.join(figures.peak_rss_moments)}")
    print(
        f"throughput: operator {figures.closed_rate:.1f} reports/s vs raw status patches "
        f"{figures.raw_rate:.1f}/s; cpus {os.cpu_count()}; wall {time.monotonic() - wall:.0f}s"
    )
    print(
        f"N={args.trials} parallel={args.parallel} ASHA {resources[0]}..{resources[1]} "
        f"eta {REDUCTION} (the RESULT keys say 10k whatever N)"
    )
    print(
        f"RESULT operator_rss_mb_10k={rss:.1f} largest_object_kib={figures.largest_kib:.1f} "
        f"restart_rebuild_s_10k={figures.resume_s:.1f} report_p99_ms_open_loop={p99:.1f} "
        f"trial_turnaround_p50_ms_open_loop={p50:.1f} api_writes_per_report="
        f"{figures.open_writes:.2f} report_throughput_ratio_vs_raw_patch={ratio:.2f}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
