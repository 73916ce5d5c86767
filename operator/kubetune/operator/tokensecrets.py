"""The Secrets that carry an experiment's trial tokens into their pods.

One Secret holds the tokens of a block of `names.TOKENS_PER_SECRET` trials, created by
the first launch of the block since the operator started (all the block's tokens are
known then: each is derived from the key and the trial's name, `kubetune.tokens`).
Before, every attempt created its trial's Secret (a resumed one's answered "exists"):
one API write in six of the open loop in bench/scale.py.

The operator may not read Secrets (manifests/rbac.yaml), so one that exists is taken as
it is. One deleted by hand is noticed by the pod that needs it: its container waits
with CreateContainerConfigError naming the Secret, and the Secret is created again
(the kubelet retries the container), with back-off until it is: such a pod changes no
more, so no later event would ask again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kubernetes.client.rest import ApiException

from kubetune.engine import UnknownTrial
from kubetune.names import LABEL_TRIAL, TOKENS_PER_SECRET, token_block, token_block_secret_name
from kubetune.operator.outcomes import namespace_terminating
from kubetune.operator.pods import token_secret
from kubetune.operator.resync import backoff

if TYPE_CHECKING:
    from kubetune.operator.experiment import Experiment

log = logging.getLogger(__name__)

# A waiting pod shows its missing Secret until the kubelet retries its container: a
# Secret made again is not made again for this long.
RECREATE_SECONDS = 5.0
MAX_RETRY_SECONDS = 300.0
MISSING_REASON = "CreateContainerConfigError"


class TokenSecrets:
    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        self._made: dict[int, asyncio.Task[None]] = {}
        self._healing: dict[int, asyncio.Task[None]] = {}
        self._healed_at: dict[int, float] = {}

    async def ensure(self, trial: str, trial_uid: str) -> None:
        """The Secret holding `trial`'s token exists when this returns. Raises the API's
        error (a launch treats it as it treats its pod's)."""
        block = token_block(trial)
        task = self._made.get(block)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = asyncio.create_task(self._create(block, trial, trial_uid))
            # Its error is the awaiting launches' to handle; if every one of them was
            # cancelled meanwhile, it is retrieved here rather than logged as lost.
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._made[block] = task
        await asyncio.shield(task)  # one launch given up does not cancel the others'

    async def _create(self, block: int, trial: str, trial_uid: str) -> None:
        exp = self.experiment
        first = block * TOKENS_PER_SECRET
        names = [exp.engine.trial_name(n) for n in range(first, first + TOKENS_PER_SECRET)]
        tokens = {name: exp.tokens.token_for(name) for name in names}
        body = token_secret(exp.namespace, exp.name, block, tokens, trial, trial_uid, exp.uid)
        await exp.kube.create(body)

    def pod_changed(self, pod: dict[str, Any], trial_uids: Mapping[int, str]) -> None:
        """A pod changed: if it is a pod of one of the experiment's trials (its HPOTrial
        the one the operator made) and it waits for its token block's Secret, which
        someone deleted, the Secret is created again, in the background."""
        metadata = pod.get("metadata") or {}
        trial = (metadata.get("labels") or {}).get(LABEL_TRIAL, "")
        try:
            # Anyone who may create pods may label one as a trial's: only the trials
            # the engine has, under the HPOTrial the operator created, are heard.
            number = self.experiment.engine.trial_by_name(trial).number
        except UnknownTrial:
            return
        uid = trial_uids.get(number)
        owners = {r.get("uid") for r in metadata.get("ownerReferences") or []}
        if uid is None or uid not in owners or not _waits_for(pod, self.experiment.name, trial):
            return
        block = token_block(trial)
        healing = self._healing.get(block)
        recent = time.monotonic() - self._healed_at.get(block, -RECREATE_SECONDS)
        if (healing is not None and not healing.done()) or recent < RECREATE_SECONDS:
            return
        self._healing[block] = asyncio.create_task(self._heal(block, trial, uid))

    async def _heal(self, block: int, trial: str, trial_uid: str) -> None:
        exp, failures = self.experiment, 0
        while not exp.closed:
            self._made.pop(block, None)
            try:
                await self.ensure(trial, trial_uid)
            except ApiException as error:
                if namespace_terminating(error.status, error.body):
                    exp.close_with_namespace()
                    return
                delay = backoff(failures, RECREATE_SECONDS, MAX_RETRY_SECONDS)
                failures += 1
                log.warning(
                    "%s/%s: token Secret %s not created again: %s (next try in %.0f s)",
                    exp.namespace,
                    exp.name,
                    token_block_secret_name(exp.name, block),
                    error.reason,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            self._healed_at[block] = time.monotonic()
            log.info(
                "%s/%s: token Secret %s was gone: created again",
                exp.namespace,
                exp.name,
                token_block_secret_name(exp.name, block),
            )
            return


def _waits_for(pod: dict[str, Any], experiment: str, trial: str) -> bool:
    """Whether `pod`'s container waits for its token block's Secret (the kubelet's
    message: `secret "<name>" not found`)."""
    name = token_block_secret_name(experiment, token_block(trial))
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting") or {}
        message = waiting.get("message") or ""
        if waiting.get("reason") == MISSING_REASON and f'"{name}"' in message:
            return True
    return False
