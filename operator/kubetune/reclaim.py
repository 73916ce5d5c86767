"""A Node about to be terminated: the taints that say so (neutral: read by the capacity
loop, which stops counting such a Node as room for waiting pods, and by the operator,
whose trials there checkpoint and leave: operator/notices.py).

AWS gives a spot instance two minutes' notice; aws-node-termination-handler taints the
Node `aws-node-termination-handler/spot-itn` (and `.../asg-lifecycle-termination`,
`.../scheduled-maintenance` for the other terminations it handles), Karpenter taints it
`karpenter.sh/disrupted` (`karpenter.sh/disruption` before v1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NOTICE_TAINTS = frozenset(
    {
        "aws-node-termination-handler/spot-itn",
        "aws-node-termination-handler/asg-lifecycle-termination",
        "aws-node-termination-handler/scheduled-maintenance",
        "karpenter.sh/disrupted",
        "karpenter.sh/disruption",
    }
)


def notice_taint(node: Mapping[str, Any]) -> str | None:
    """The termination taint a Node carries, or None."""
    for taint in (node.get("spec") or {}).get("taints") or []:
        if isinstance(taint, Mapping) and taint.get("key") in NOTICE_TAINTS:
            return str(taint["key"])
    return None
