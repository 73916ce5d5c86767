"""What every part of an experiment's controller shares: who the experiment is (its
names, UID, spec), its engine and the lock that guards it, the API client, and the
Kubernetes Events it posts. The parts themselves (kubetune.operator.controller lists
them) each hold their own state and reach the others only through their methods."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from kubetune.engine import Engine
from kubetune.kubeevents import MESSAGE_LIMIT, event_body
from kubetune.names import endpoint_for
from kubetune.observability import Observer
from kubetune.operator import store
from kubetune.operator.eventbudget import EventBudget
from kubetune.operator.kube import Kube
from kubetune.operator.tokensecrets import TokenSecrets
from kubetune.placement import PlacementSource
from kubetune.spec import ExperimentSpec
from kubetune.timestamps import parse_rfc3339
from kubetune.tokens import TokenAuthority, experiment_scope
from kubetune.trialenv import checkpoint_uri

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperatorConfig:
    endpoint_url: str
    token_key: bytes
    pod_grace_seconds: int = 30
    # Where trials checkpoint when their experiment names no `spec.checkpoints`.
    default_checkpoint_uri: str | None = None
    # The capacity loop (kubetune.capacity.manager.CapacityManager): node pool placement.
    capacity: PlacementSource | None = None


class Experiment:
    def __init__(
        self,
        kube: Kube,
        config: OperatorConfig,
        body: dict[str, Any],
        spec: ExperimentSpec,
        observer: Observer | None = None,
    ) -> None:
        metadata = body["metadata"]
        self.kube = kube
        self.config = config
        # The operator's metrics (handlers.Registry's); None: counted nowhere.
        self.observer = observer if observer is not None else Observer(False)
        self.namespace: str = metadata["namespace"]
        self.name: str = metadata["name"]
        self.uid: str = metadata["uid"]
        self.generation: int = metadata.get("generation", 1)
        self.body = body
        self.spec = spec
        # The UID: a recreated experiment of the same name does not take the old tokens.
        scope = experiment_scope(self.namespace, self.name, self.uid)
        self.tokens = TokenAuthority(config.token_key, scope)
        self.signer = store.HistorySigner(config.token_key, scope)
        self.endpoint = endpoint_for(config.endpoint_url, self.namespace, self.name)
        self.lock = asyncio.Lock()
        self.engine = Engine(spec, self.name)  # replaced by the one `load` rebuilds
        self.loaded = False
        self.closed = False  # the experiment is gone: nothing more is written
        self.load_failure: str | None = None
        self.background: set[asyncio.Task[Any]] = set()
        # Launches being carried out (operator/launching.py), by (trial name, attempt).
        self.launches: dict[tuple[str, int], Launch] = {}
        self.token_secrets = TokenSecrets(self)
        self.events = EventBudget()
        # Written by the capacity loop (capacity_update); the stored cost seeds it, and
        # the time it was accounted up to tells a restarted loop what it has not seen.
        stored = body.get("status") or {}
        self.cost_usd: float | None = stored.get("costUSD")
        self.cost_at: float | None = parse_rfc3339(stored.get("costAccountedAt"))
        self.capacity_conditions: list[dict[str, Any]] = []

    def slots_ahead(self) -> int | None:
        """The most trials that may hold a slot at once from now on (`Engine.slots_ahead`,
        read by the capacity loop); None until the engine is rebuilt."""
        return self.engine.slots_ahead() if self.loaded else None

    def close_with_namespace(self) -> None:
        """The API server refused a create because the namespace is being deleted: the
        experiment goes with it, so nothing more is written or created for it."""
        if not self.closed:
            log.info("%s/%s: its namespace is being deleted", self.namespace, self.name)
        self.closed = True

    def withdraw_launch(self, trial: str, attempt: int) -> asyncio.Event | None:
        """The attempt's pods are to be deleted: its launch, if one is under way, creates
        nothing more from now on (no await: what the launch sees next is this). Returns
        the event set once it has stopped creating (a deletion before a creation finds
        nothing, and the pod created a moment later would run on)."""
        launch = self.launches.get((trial, attempt))
        if launch is None:
            return None
        launch.withdrawn.set()
        return launch.done

    def in_background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` without waiting for it, kept referenced until it ends."""
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def event(self, message: str, reason: str, warning: bool = False) -> None:
        # Events are for people: posted in the background, never holding up a decision,
        # and within the budget of their reason (operator/eventbudget.py).
        if self.events.admit(reason, time.monotonic()):
            event = event_body(self.body, "HPOExperiment", reason, message, warning)
            self.in_background(self.kube.post_event(event))
        elif self.events.hold(reason, message, warning, time.time()):
            self.in_background(self._post_held(reason))

    async def _post_held(self, reason: str, now: bool = False) -> None:
        if not now:
            await asyncio.sleep(self.events.due(reason, time.monotonic()))
        held = self.events.release(reason, time.monotonic())
        if held is None or self.closed:
            return
        message = held.message
        if held.count > 1:
            folded = f" (and {held.count - 1} more {reason} Events folded into this one)"
            message = message[: MESSAGE_LIMIT - len(folded)] + folded  # kept past the cut
        count, since = held.count, held.since
        await self.kube.post_event(
            event_body(self.body, "HPOExperiment", reason, message, held.warning, count, since)
        )

    async def post_held_events(self) -> None:
        """Every reason's held Events posted now, each as one: the operator is stopping,
        and what its budget holds would be lost with it."""
        held = [self._post_held(reason, now=True) for reason in list(self.events.held)]
        await asyncio.gather(*held, return_exceptions=True)  # one failing stops no other

    def checkpoint_base(self) -> str | None:
        base = self.spec.checkpoints.uri if self.spec.checkpoints else None
        return base or self.config.default_checkpoint_uri

    def checkpoint_uri(self, trial: str) -> str:
        base = self.checkpoint_base()
        return checkpoint_uri(base, self.name, trial) if base else ""


@dataclass
class Launch:
    """One attempt's launch under way: `withdrawn` once its pods are to be deleted
    (create nothing more), `done` once it creates nothing more; `pods`: created so far,
    `tried_pods`: whose creation was sent (a time-out may have created one)."""

    withdrawn: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    pods: int = 0
    tried_pods: int = 0
