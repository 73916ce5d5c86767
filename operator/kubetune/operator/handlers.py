"""kopf handlers: watch experiments and trial pods, route them to their controllers.

The operator's state (the `Registry`, where to listen) is in kopf's `memo`, put there
by kubetune.operator.main. Only `on.event` handlers and a resync task per experiment
(kubetune.operator.resync): kopf keeps no handler progress on our
objects and adds no finalizer, so deleting an experiment never waits for the operator
(owner references let the garbage collector remove trials, pods and secrets).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from kubetune import observability
from kubetune.ingest import NOT_READY, NotReady, ReportServer, ReportTarget
from kubetune.kubeevents import event_body
from kubetune.names import EXPERIMENTS, GROUP, LABEL_EXPERIMENT, TRIALS, VERSION
from kubetune.offloop import SuggestionWorker
from kubetune.operator import trim
from kubetune.operator.controller import ExperimentController, OperatorConfig
from kubetune.operator.gcfreeze import freeze_what_exists
from kubetune.operator.kube import TRIALS_PER_PAGE, Kube
from kubetune.operator.logs import LogStreams
from kubetune.operator.resync import Resync
from kubetune.operator.status import failed_status
from kubetune.reclaim import notice_taint
from kubetune.spec import SchedulerName, SpecError, parse_experiment

logger = logging.getLogger(__name__)

RESYNC_SECONDS = 5.0
# When experiments cannot be listed at start-up: how long an unknown one may still be
# one the watch has not delivered yet.
WARM_UP_SECONDS = 60.0
PAUSING_SCHEDULERS = (SchedulerName.SHA, SchedulerName.ASHA, SchedulerName.HYPERBAND)


class Registry:
    """The controllers of the experiments this operator sees, by (namespace, name)."""

    def __init__(
        self, kube: Kube, config: OperatorConfig, observer: observability.Observer
    ) -> None:
        self.kube = kube
        self.config = config
        self.observer = observer
        self.sampler = SuggestionWorker()
        self.logs = LogStreams(kube.api)
        self.controllers: dict[tuple[str, str], ExperimentController] = {}
        self.resync = Resync(RESYNC_SECONDS, observer=observer)
        self.started = time.monotonic()
        self.expected: set[tuple[str, str]] | None = None
        self.noticed: dict[str, dict[str, Any]] = {}  # Nodes with a termination taint

    def resolve(
        self, namespace: str | None, experiment: str | None
    ) -> ReportTarget | NotReady | None:
        controller = self.controllers.get((namespace or "", experiment or ""))
        if controller is not None and controller.loaded:
            return controller.target()
        if controller is not None and controller.load_failure is not None:
            return None  # failed: its trials' reports are refused, nothing is decided
        key = (namespace or "", experiment or "")
        warming_up = self.expected is None and time.monotonic() - self.started < WARM_UP_SECONDS
        if controller is not None or key in (self.expected or ()) or warming_up:
            # Being rebuilt after a restart: its trials must retry, not fail.
            return NOT_READY
        return None

    async def list_expected(self) -> None:
        """The experiments that exist at start-up, so that their trials' reports are told
        to retry (not refused) until their controllers are rebuilt."""
        try:
            self.expected = await self.kube.list_experiment_keys()
        except Exception as error:  # e.g. a namespaced install: fall back to a warm-up time
            logger.warning("could not list experiments at start-up: %s", error)

    async def experiment_event(self, event_type: str, body: dict[str, Any]) -> None:
        metadata = body["metadata"]
        key = (metadata["namespace"], metadata["name"])
        if event_type == "DELETED" or metadata.get("deletionTimestamp"):
            self._remove(key)
            self.observer.forget(*key)
            return
        controller = self.controllers.get(key)
        if controller is not None and controller.uid != metadata["uid"]:
            self._remove(key)  # deleted and created again under the same name
            controller = None
        if controller is not None and metadata.get("generation", 0) == controller.generation:
            # Our own status write coming back (the resync loop keeps us level), or a
            # status someone else wrote, which is put back.
            await controller.experiment_status_seen(body)
            return
        try:
            experiment = parse_experiment(
                {k: body.get(k) for k in ("apiVersion", "kind", "metadata", "spec")}
            )
        except SpecError as error:
            await self._mark_invalid(body, error)
            return
        pauses = experiment.spec.scheduler.name in PAUSING_SCHEDULERS
        if (
            pauses
            and experiment.spec.checkpoints is None
            and not self.config.default_checkpoint_uri
        ):
            reason = (
                f"required by scheduler {experiment.spec.scheduler.name.value} on a cluster: "
                f"paused trials resume from checkpoints (or start the operator with "
                f"--default-checkpoint-uri)"
            )
            await self._mark_invalid(body, SpecError([("spec.checkpoints.uri", reason)]))
            return
        capacity = self.config.capacity  # spec.capacity.nodePool must name a known pool
        unknown = capacity.check(experiment.spec) if capacity is not None else None
        if controller is None and unknown is not None:
            await self._mark_invalid(body, SpecError([("spec.capacity.nodePool", unknown)]))
            return
        too_big = capacity.check_workers(experiment.spec) if capacity is not None else None
        if controller is None and too_big is not None:
            await self._mark_invalid(body, SpecError([("spec.workers", too_big)]))
            return
        if controller is None:
            controller = ExperimentController(
                self.kube.bounded(),  # its calls hanging leave threads for the others'
                self.config,
                self.sampler,
                dict(body),
                experiment.spec,
                self.logs,
                self.observer,
            )
            self.controllers[key] = controller
            for node in self.noticed.values():  # Nodes already being reclaimed
                controller.pods.node_changed(node, deleted=False)
            self.resync.start(controller)
            await controller.load()
        elif metadata.get("generation", 0) != controller.generation:
            await controller.spec_changed(dict(body), experiment.spec)
        await controller.step()

    def _remove(self, key: tuple[str, str]) -> None:
        self.resync.stop(key)
        gone = self.controllers.pop(key, None)
        if gone is not None:
            gone.close()

    async def _mark_invalid(self, body: dict[str, Any], error: SpecError) -> None:
        metadata = body["metadata"]
        problems = "; ".join(f"{path}: {reason}" for path, reason in error.problems)
        logger.warning(
            "experiment %s/%s is invalid: %s", metadata["namespace"], metadata["name"], problems
        )
        status = body.get("status") or {}
        generation = metadata.get("generation")
        written = (status.get("reason"), status.get("message"), status.get("observedGeneration"))
        if written == ("Invalid", problems, generation):
            return
        # Stalled (kstatus) and Failed, about this generation: GitOps tools see it failed.
        previous = status.get("conditions") or []
        failed = dict(failed_status("Invalid", problems, generation, previous, time.time()))
        await self.kube.patch_experiment_status(metadata["namespace"], metadata["name"], failed)
        await self.kube.post_event(event_body(body, "HPOExperiment", "Invalid", problems, True))

    async def pod_event(self, event_type: str, body: dict[str, Any]) -> None:
        metadata = body["metadata"]
        key = (metadata["namespace"], metadata.get("labels", {}).get(LABEL_EXPERIMENT, ""))
        controller = self.controllers.get(key)
        if controller is not None:
            await controller.pod_changed(body, deleted=event_type == "DELETED")

    def node_event(self, event_type: str, body: dict[str, Any]) -> None:
        """A Node changed: its termination taint, if any, tells the trials on it to
        checkpoint and leave at their next report (operator/notices.py)."""
        name = body["metadata"]["name"]
        deleted = event_type == "DELETED"
        if notice_taint(body) is not None and not deleted:
            self.noticed[name] = body
        else:
            self.noticed.pop(name, None)
        for controller in self.controllers.values():
            controller.pods.node_changed(body, deleted)

    async def trial_event(self, event_type: str, body: dict[str, Any]) -> None:
        metadata = body["metadata"]
        key = (metadata["namespace"], metadata.get("labels", {}).get(LABEL_EXPERIMENT, ""))
        controller = self.controllers.get(key)
        if controller is not None:
            await controller.trial_changed(body, deleted=event_type == "DELETED")


def _registry(memo: kopf.Memo) -> Registry:
    """The operator's state, put in kopf's memo by kubetune.operator.main."""
    registry = memo.get("registry")
    assert isinstance(registry, Registry), "kubetune.operator.main puts it in kopf's memo"
    return registry


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf's settings for kubetune's watches."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.watching.inactivity_timeout = 600
    # A watch starts with a LIST of what exists: kopf's default is one response, every
    # HPOTrial's history at once (~35 KB each as JSON, several times that as objects),
    # the restarted operator's peak memory. A page at a time, as the rebuild reads them.
    settings.watching.chunk_size = TRIALS_PER_PAGE
    # The handlers' `labels=` filters are kopf's, client side: without a server-side
    # selector every pod of the cluster reaches the operator and is parsed (and, before
    # operator/kopfmemories.py, was remembered by kopf until deleted), so its CPU would
    # grow with other tenants' pods, not with its own work.
    for resource in WATCHED_BY_LABEL:
        settings.watching.label_selectors[resource] = LABEL_EXPERIMENT
    # kopf keeps a worker per object for this long after its last event, holding that
    # event's body: an HPOTrial with its history is ~35 KB of JSON, several times that as
    # objects, and every running trial's is written every few seconds, so at kopf's 5 s
    # default about 16 MB of bodies stayed alive at the end of a 2,000-trial bench run.
    settings.queueing.idle_timeout = 0.5
    settings.posting.enabled = False  # our own Events, with reasons users can filter on


# (group, version, plural) of the watches whose objects all carry LABEL_EXPERIMENT.
WATCHED_BY_LABEL = ((GROUP, VERSION, TRIALS), ("", "v1", "pods"))


@kopf.on.startup()
async def _startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # API calls run in threads (the client is synchronous): allow many in flight.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=32))
    configure(settings)
    registry = _registry(memo)
    server = ReportServer(registry.resolve, observer=registry.observer)
    await registry.list_expected()
    host, port = memo.get("listen", ("127.0.0.1", 8080))
    await server.start(host, port)
    logger.info("report endpoint listening on %s:%s", host, server.port)
    memo["trimmer"] = asyncio.create_task(trim.release_periodically())
    # Started: what exists now lives as long as the process (operator/gcfreeze.py).
    frozen = freeze_what_exists()
    logger.debug("%d objects left out of the collector's walks", frozen)


@kopf.on.login()
def _login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """kopf watches with the very credentials our client was configured with."""
    config = _registry(memo).kube.api.configuration
    header = (config.api_key or {}).get("authorization") or (config.api_key or {}).get(
        "BearerToken"
    )
    scheme, _sep, token = (header or "").partition(" ")
    if header and not token:
        scheme, token = "Bearer", header
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
    )


@kopf.on.cleanup()
async def _cleanup(memo: kopf.Memo, **_: Any) -> None:
    registry = _registry(memo)
    if (trimmer := memo.get("trimmer")) is not None:
        trimmer.cancel()
    # Stopped, not killed: the reports answered but not written yet are written now.
    late = [c.writer.write_late_reports(at_exit=True) for c in registry.controllers.values()]
    # So are the Events their budgets hold (operator/eventbudget.py), each as one.
    held = [c.post_held_events() for c in registry.controllers.values()]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            await asyncio.gather(*late, *held, return_exceptions=True)
    registry.resync.close()
    registry.sampler.close()
    await registry.logs.close()


@kopf.on.event(GROUP, VERSION, EXPERIMENTS)
async def _experiment(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    observability.bind_log_context(body.metadata.namespace, body.metadata.name)
    registry = _registry(memo)
    try:
        await registry.experiment_event(event.get("type") or "", dict(body))
    except Exception as error:
        registry.observer.reconcile_error("experiment", error)
        logger.exception("experiment %s/%s", body.metadata.namespace, body.metadata.name)


@kopf.on.event(GROUP, VERSION, TRIALS, labels={LABEL_EXPERIMENT: kopf.PRESENT})
async def _trial(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    experiment = body.metadata.labels.get(LABEL_EXPERIMENT)
    observability.bind_log_context(body.metadata.namespace, experiment)
    registry = _registry(memo)
    try:
        await registry.trial_event(event.get("type") or "", dict(body))
    except Exception as error:
        registry.observer.reconcile_error("trial", error)
        logger.exception("trial %s/%s", body.metadata.namespace, body.metadata.name)


@kopf.on.event("", "v1", "nodes")
async def _node(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    registry = _registry(memo)
    try:
        registry.node_event(event.get("type") or "", dict(body))
    except Exception as error:
        registry.observer.reconcile_error("node", error)
        logger.exception("node %s", body.metadata.name)


@kopf.on.event("", "v1", "pods", labels={LABEL_EXPERIMENT: kopf.PRESENT})
async def _pod(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    experiment = body.metadata.labels.get(LABEL_EXPERIMENT)
    observability.bind_log_context(body.metadata.namespace, experiment)
    registry = _registry(memo)
    try:
        await registry.pod_event(event.get("type") or "", dict(body))
    except Exception as error:
        registry.observer.reconcile_error("pod", error)
        logger.exception("pod %s/%s", body.metadata.namespace, body.metadata.name)
