"""Reclaim notices: a Node about to go away makes its trials checkpoint now and leave.

AWS gives a spot instance two minutes' notice, and the Node gets a termination taint
(`kubetune.reclaim.NOTICE_TAINTS`: aws-node-termination-handler's, Karpenter's). Without
this module a reclaimed trial resumed from its last checkpoint, possibly a whole rung
back; with it:

* the operator watches Nodes; a trial with a pod on a noticed Node gets, at its next
  report, the answer `pause` with `checkpointAndExit: true` (the engine's own decision,
  `continue`, is recorded as it was: the notice is not the scheduler's business). The
  SDK saves a checkpoint of that step (the script's pause pattern, or its registered
  callback) and exits with code 143, as after SIGTERM; an older SDK saves and exits 0;
* the attempt's end is an *interruption*, not a completion nor a failure, whatever its
  exit code, so the trial resumes on another node from the step it just saved;
* a script without the SDK cannot hear the answer: it gets SIGTERM when its node
  drains, as before.

The state (which Nodes carry a notice, which attempts were told) is rebuilt from the
Node watch after an operator restart; an attempt told to leave whose Node is gone by
then ends as an interruption anyway when its pod is deleted with the Node, but one
whose pod exited before the restart and whose Node is gone too is counted by its exit
code (a failure for 143).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from kubetune.events import ExitKind
from kubetune.operator.outcomes import Outcome
from kubetune.reclaim import notice_taint
from kubetune.trials import Decision, Verdict


def leave_verdict(verdict: Verdict, node: str, taint: str) -> Verdict:
    """What a report is answered when its pod's node is being taken away: a `continue`
    becomes "checkpoint and exit"; a pause or a stop stays (the trial leaves anyway)."""
    if verdict.decision is not Decision.CONTINUE:
        return verdict
    reason = f"node {node} is being reclaimed ({taint}): checkpoint and exit"
    return replace(verdict, decision=Decision.PAUSE, reason=reason, checkpoint_and_exit=True)


def interrupted(outcome: Outcome, node: str, taint: str | None, told: bool) -> Outcome:
    """An attempt that ended after its node's notice is an interruption (it saved its
    step and left, or was killed with the node), not a completion or a failure."""
    if outcome.kind is not ExitKind.EXITED or not (told or taint):
        return outcome
    why = f"node {node} reclaimed ({taint})" if taint else f"node {node} reclaimed"
    code = f", exit code {outcome.exit_code}" if outcome.exit_code is not None else ""
    return Outcome(ExitKind.INTERRUPTED, None, f"{why}: checkpointed and left{code}")


@dataclass
class NodeNotices:
    """Which Nodes carry a termination notice, where each attempt's pods run, and which
    attempts were told to leave (one experiment's view; fed by the Node and pod watches)."""

    noticed: dict[str, str] = field(default_factory=dict)  # node -> taint
    pods: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # pod -> (n, a, node)
    told: set[tuple[int, int]] = field(default_factory=set)

    def node_changed(self, node: Mapping[str, Any], deleted: bool) -> bool:
        """Note a Node's notice; True when it is new."""
        name = str((node.get("metadata") or {}).get("name", ""))
        taint = None if deleted else notice_taint(node)
        before = self.noticed.get(name)
        if taint is None:
            self.noticed.pop(name, None)
            return False
        self.noticed[name] = taint
        return before is None

    def pod_seen(self, pod: str, number: int, attempt: int, node: str | None, gone: bool) -> None:
        if gone or not node:
            self.pods.pop(pod, None)
        else:
            self.pods[pod] = (number, attempt, node)

    def nodes_of(self, number: int, attempt: int) -> Iterable[str]:
        return (n for (t, a, n) in self.pods.values() if (t, a) == (number, attempt))

    def answer(self, number: int, attempt: int, verdict: Verdict) -> Verdict:
        """The answer to the attempt's report: told to leave when any of its pods (a
        gang's included) runs on a noticed Node."""
        for node in self.nodes_of(number, attempt):
            taint = self.noticed.get(node)
            if taint is not None:
                answered = leave_verdict(verdict, node, taint)
                if answered.checkpoint_and_exit:
                    self.told.add((number, attempt))
                return answered
        return verdict

    def outcome(self, number: int, attempt: int, node: str | None, outcome: Outcome) -> Outcome:
        told = (number, attempt) in self.told
        nodes = [node] if node else list(self.nodes_of(number, attempt))
        taint = next((self.noticed[n] for n in nodes if n in self.noticed), None)
        if outcome.kind is not ExitKind.EXITED:
            self.told.discard((number, attempt))
            return outcome
        result = interrupted(outcome, nodes[0] if nodes else "?", taint, told)
        self.told.discard((number, attempt))
        return result
