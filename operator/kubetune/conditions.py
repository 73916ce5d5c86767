"""An experiment's status conditions: kubetune's own and the kstatus convention's.

`Running`, `Succeeded` and `Failed` say the phase (`kubectl wait
--for=condition=Succeeded`). Next to them, the conditions that kstatus readers (Flux's
health checks, `kstatus`/`cli-utils`, Argo CD's generic checks) understand, so that they
tell an experiment in progress from a current one and from a failed one without knowing
kubetune:

* `Reconciling` is True while the experiment runs: trials are still being decided;
* `Stalled` is True when it failed (too many failed trials, an `Invalid` spec, an
  unreadable history): nothing more will happen until someone changes it;
* `Ready` is True when it succeeded: its result (`status.bestTrial`) is final.

kstatus also compares `status.observedGeneration` with `metadata.generation`: the shells
write both. Only the *status* of an abnormal-true condition (Reconciling, Stalled) is
read by kstatus, so they stay listed with status False when not applicable: `kubectl wait
--for=condition=Stalled=false` works as well.

Pure: the caller gives the clock and the conditions it wrote last, whose
`lastTransitionTime` is kept while a condition's status does not change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

PHASE_CONDITIONS = ("Running", "Succeeded", "Failed")
KSTATUS_CONDITIONS = ("Ready", "Reconciling", "Stalled")

# Which phase makes each kstatus condition True ("Pending" counts as running: it is
# being worked on).
_TRUE_IN: dict[str, frozenset[str]] = {
    "Ready": frozenset({"Succeeded"}),
    "Reconciling": frozenset({"Pending", "Running"}),
    "Stalled": frozenset({"Failed"}),
}


def experiment_conditions(
    phase: str,
    reason: str,
    message: str,
    generation: int | None,
    previous: Iterable[Mapping[str, Any]],
    now: str | None,
) -> list[dict[str, Any]]:
    """The six conditions of an experiment in `phase`, with `reason`/`message` on the
    ones that are True (and on `Ready` while it is not, saying why not yet)."""
    before = {c.get("type"): c for c in previous}
    truths = {kind: phase == kind for kind in PHASE_CONDITIONS}
    truths.update({kind: phase in _TRUE_IN[kind] for kind in KSTATUS_CONDITIONS})
    conditions = []
    for kind, true in truths.items():
        value = "True" if true else "False"
        old = before.get(kind)
        changed = old is None or old.get("status") != value or not old.get("lastTransitionTime")
        explained = true or kind == "Ready"
        condition: dict[str, Any] = {
            "type": kind,
            "status": value,
            "reason": reason if explained else f"Not{kind}",
            "message": message if explained else "",
            "lastTransitionTime": now if changed or old is None else old["lastTransitionTime"],
        }
        if generation is not None:
            condition["observedGeneration"] = generation
        conditions.append(condition)
    return conditions
