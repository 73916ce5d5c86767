"""The Secrets that carry an experiment's trial tokens into their pods.

One Secret holds the tokens of a block of `names.TOKENS_PER_SECRET` trials, created by
the first launch of the block since the operator started (all the block's tokens are
known then: each is derived from the key and the trial's name, `kubetune.tokens`).
Before, every attempt created its trial's Secret (a resumed one's answered "exists"):
one API write in six of the open loop in bench/scale.py.

The operator may not read Secrets (manifests/rbac.yaml), so one that exists is taken as
it is. One deleted by hand is noticed by the pod that needs it: its container waits
with CreateContainerConfigError naming the Secret, and the Secret is created again
(the kubelet retries the container).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from kubetune.names import LABEL_TRIAL, TOKENS_PER_SECRET, token_block, token_block_secret_name
from kubetune.operator.pods import token_secret

if TYPE_CHECKING:
    from kubetune.operator.experiment import Experiment

# A pod reports its missing Secret at each retry of its container: the Secret is made
# again at most this often per block.
RECREATE_SECONDS = 5.0
MISSING_REASON = "CreateContainerConfigError"


class TokenSecrets:
    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        self._made: dict[int, asyncio.Task[None]] = {}
        self._recreated_at: dict[int, float] = {}

    async def ensure(self, trial: str, trial_uid: str) -> None:
        """The Secret holding `trial`'s token exists when this returns. Raises the API's
        error (the launch treats it as it treats its pod's)."""
        block = token_block(trial)
        task = self._made.get(block)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = asyncio.create_task(self._create(block, trial, trial_uid))
            self._made[block] = task
        await asyncio.shield(task)  # one launch given up does not cancel the others'

    async def _create(self, block: int, trial: str, trial_uid: str) -> None:
        exp = self.experiment
        first = block * TOKENS_PER_SECRET
        names = [exp.engine.trial_name(n) for n in range(first, first + TOKENS_PER_SECRET)]
        tokens = {name: exp.tokens.token_for(name) for name in names}
        body = token_secret(exp.namespace, exp.name, block, tokens, trial, trial_uid, exp.uid)
        await exp.kube.create(body)

    def pod_changed(self, pod: dict[str, Any]) -> None:
        """A pod of the experiment changed: if it waits for its token Secret, which
        someone deleted, the Secret is created again (in the background), controlled by
        the pod's HPOTrial."""
        metadata = pod.get("metadata") or {}
        trial = (metadata.get("labels") or {}).get(LABEL_TRIAL, "")
        owners = [r for r in metadata.get("ownerReferences") or [] if r.get("kind") == "HPOTrial"]
        if not owners or not _waits_for(pod, self.experiment.name, trial):
            return
        trial_uid = owners[0]["uid"]
        block = token_block(trial)
        now = time.monotonic()
        if now - self._recreated_at.get(block, -RECREATE_SECONDS) < RECREATE_SECONDS:
            return
        self._recreated_at[block] = now
        self._made.pop(block, None)
        self.experiment.in_background(self.ensure(trial, trial_uid))


def _waits_for(pod: dict[str, Any], experiment: str, trial: str) -> bool:
    """Whether `pod`'s container waits for its token block's Secret."""
    if not trial.startswith(f"{experiment}-") or not trial.rsplit("-", 1)[-1].isdigit():
        return False
    name = token_block_secret_name(experiment, token_block(trial))
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting") or {}
        message = waiting.get("message") or ""
        if waiting.get("reason") == MISSING_REASON and f'"{name}"' in message:
            return True
    return False
