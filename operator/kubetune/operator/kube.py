"""A thin async face over the official Kubernetes client, for the calls the operator makes.

The client is synchronous; calls run in a thread pool so the event loop (kopf's watches,
the report endpoint) never waits on the network. Creates are idempotent (409 means it
is there already) and deletes are idempotent (404 means it is gone already), which is
what a level-triggered reconcile that may repeat itself after a crash needs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from kubetune.leanobjects import lean
from kubetune.names import EXPERIMENTS, GROUP, LABEL_EXPERIMENT, TRIALS, VERSION

logger = logging.getLogger(__name__)


def load_client_config(kubeconfig: str | None = None) -> client.ApiClient:
    """An explicit kubeconfig, else the pod's ServiceAccount, else ~/.kube/config."""
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
    else:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    # As many connections as API threads (handlers.py), or urllib3 discards them.
    configuration.connection_pool_maxsize = 32
    return client.ApiClient(configuration)


# Calls one experiment may have in flight at once, of the 32 threads they all share
# (handlers.py): an experiment whose calls hang (a webhook timing out, a slow write)
# leaves the rest of the threads, so the others' calls do not queue behind it.
CALLS_PER_EXPERIMENT = 16
TRIALS_PER_PAGE = 50  # HPOTrials per LIST response: each is up to ~70 KiB of history
PODS_PER_PAGE = 500


class Kube:
    def __init__(self, api: client.ApiClient, max_calls: int | None = None) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.slots = asyncio.Semaphore(max_calls) if max_calls else None

    def bounded(self, max_calls: int = CALLS_PER_EXPERIMENT) -> Kube:
        """The same client, with at most `max_calls` calls in flight through this face."""
        return Kube(self.api, max_calls)

    async def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        if self.slots is None:
            return await asyncio.to_thread(function, *args, **kwargs)
        async with self.slots:
            return await asyncio.to_thread(function, *args, **kwargs)

    # ----- experiments and trials --------------------------------------------------------

    async def get_experiment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._call(
                self.custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                EXPERIMENTS,
                name,
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def list_experiment_keys(self) -> set[tuple[str, str]]:
        found = await self._call(
            self.custom.list_cluster_custom_object, GROUP, VERSION, EXPERIMENTS
        )
        return {(i["metadata"]["namespace"], i["metadata"]["name"]) for i in found["items"]}

    async def patch_experiment_status(self, namespace: str, name: str, status: dict) -> str:
        """Returns the resourceVersion written (to tell our writes from others')."""
        written = await self._call(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            EXPERIMENTS,
            name,
            {"status": status},
        )
        return str(written["metadata"]["resourceVersion"])

    async def list_trials(
        self, namespace: str, experiment: str, page: int = TRIALS_PER_PAGE
    ) -> list[dict[str, Any]]:
        """The experiment's HPOTrials (all of them held: `trial_pages` reads them a page
        at a time)."""
        return [t async for items in self.trial_pages(namespace, experiment, page) for t in items]

    async def trial_pages(
        self, namespace: str, experiment: str, page: int = TRIALS_PER_PAGE
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The experiment's HPOTrials, `page` at a time: in one response, 1,000 trials'
        histories were ~70 MB of JSON held whole by the client as bytes, text and objects
        at once, the operator's peak memory on every restart."""
        token = ""
        while True:
            found = await self._call(
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                TRIALS,
                label_selector=f"{LABEL_EXPERIMENT}={experiment}",
                limit=page,
                **({"_continue": token} if token else {}),
            )
            yield found.get("items", [])
            token = (found.get("metadata") or {}).get("continue") or ""
            if not token:
                return

    async def create_trial(self, namespace: str, body: dict) -> dict[str, Any]:
        """The HPOTrial created, or the object that holds its name already (the caller
        checks that it is its own: `pods.owned_by`)."""
        try:
            return await self._call(
                self.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, TRIALS, body
            )
        except ApiException as error:
            if error.status != 409:
                raise
            return await self._call(
                self.custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                TRIALS,
                body["metadata"]["name"],
            )

    async def patch_trial_status(self, namespace: str, name: str, status: dict) -> str:
        """Returns the resourceVersion written; ApiException 404 if the trial is gone."""
        written = await self._call(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            TRIALS,
            name,
            {"status": status},
        )
        return str(written["metadata"]["resourceVersion"])

    # ----- pods and secrets ------------------------------------------------------------

    async def list_pods(
        self,
        namespace: str,
        experiment: str,
        keep: Callable[[dict[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """The experiment's pods that `keep` accepts (all by default), PODS_PER_PAGE a
        response and each without what is never read (`leanobjects.lean`). Ended pods
        stay, with their logs: at 5,000 trials one response of every pod, held whole as
        bytes and objects, took the restarted operator of bench/scale.py from about 300
        to 480 MB, and the allocator kept most of it."""
        kept: list[dict[str, Any]] = []
        token = ""
        while True:
            found = await self._call(
                self.core.list_namespaced_pod,
                namespace,
                label_selector=f"{LABEL_EXPERIMENT}={experiment}",
                limit=PODS_PER_PAGE,
                _preload_content=False,
                **({"_continue": token} if token else {}),
            )
            page = json.loads(found.data)
            del found
            kept += [lean(p) for p in page.get("items") or [] if keep is None or keep(p)]
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return kept

    async def create(self, body: dict) -> dict[str, Any] | None:
        """Create a Pod, Secret or Service: None, or the pod or Service that holds its
        name already, left as it is (the caller checks that it is its own:
        `pods.owned_by`). A Secret that exists is taken as it is: the operator may not
        read Secrets (rbac.yaml)."""
        kind = body["kind"]
        create, read = {
            "Pod": (self.core.create_namespaced_pod, self.core.read_namespaced_pod),
            "Service": (self.core.create_namespaced_service, self.core.read_namespaced_service),
        }.get(kind, (self.core.create_namespaced_secret, None))
        namespace = body["metadata"]["namespace"]
        try:
            await self._call(create, namespace, body)
            return None
        except ApiException as error:
            if error.status != 409:
                raise
        if read is None:
            return None
        found = await self._call(
            read,
            body["metadata"]["name"],
            namespace,
            _preload_content=False,
        )
        existing: dict[str, Any] = json.loads(found.data)
        return existing

    async def delete_pod(self, namespace: str, name: str, grace_seconds: int | None = None) -> None:
        try:
            await self._call(
                self.core.delete_namespaced_pod,
                name,
                namespace,
                grace_period_seconds=grace_seconds,
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def post_event(self, event: client.CoreV1Event) -> None:
        """A Kubernetes Event (kubeevents.event_body); failures are only logged."""
        namespace = event.involved_object.namespace
        try:
            await self._call(self.core.create_namespaced_event, namespace, event)
        except Exception as error:  # an API error or the connection's: posted in the background
            why = error.reason if isinstance(error, ApiException) else repr(error)
            logger.warning(
                "could not post event %s for %s: %s", event.reason, event.involved_object.name, why
            )
