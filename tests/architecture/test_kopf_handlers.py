"""kubetune's kopf handlers stay of the kinds `EventOnlyMemories` serves.

`kubetune.operator.kopfmemories.EventOnlyMemories` keeps no per-object memory in kopf:
right for `on.event` handlers and the operator-wide activities (startup, login,
cleanup, probe), wrong for the handlers that read a memory from one event to the next
(daemons, timers, indexes, on.create/update/delete/resume/field: their progress,
throttling and running tasks live there). A handler of such a kind must come with its
own memories container, not this one.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "kubetune"
SERVED = {"event", "startup", "login", "cleanup", "probe"}
STATEFUL = {"daemon", "timer", "index"}


def kopf_registrations(source: str) -> tuple[list[str], list[str]]:
    """The kinds of every `kopf.on.<kind>` / `kopf.daemon|timer|index` reference in
    `source` (as a decorator or called directly), and the names imported from kopf's
    handler namespaces (`from kopf import on`, `from kopf.on import …`: references this
    walk could not tell apart)."""
    kinds, hidden = [], []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            name = ast.unparse(node)
            if name.startswith("kopf.on.") and name.count(".") == 2:
                kinds.append(name.removeprefix("kopf.on."))
            elif name in {f"kopf.{kind}" for kind in STATEFUL}:
                kinds.append(name.removeprefix("kopf."))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kopf"):
            names = {alias.name for alias in node.names}
            if node.module in ("kopf.on", "kopf._core.intents.registries") or (
                node.module == "kopf" and names & ({"on"} | STATEFUL)
            ):
                hidden.append(f"from {node.module} import {', '.join(sorted(names))}")
    return kinds, hidden


def test_the_walk_sees_every_way_of_registering_a_handler() -> None:
    source = (
        "import kopf\n"
        "@kopf.on.event('v1', 'pods')\nasync def a(**_): ...\n"
        "@kopf.timer('v1', 'pods', interval=1)\nasync def b(**_): ...\n"
        "kopf.on.update('v1', 'pods')(b)\n"
        "from kopf import on\n"
    )
    kinds, hidden = kopf_registrations(source)
    assert sorted(kinds) == ["event", "timer", "update"]
    assert hidden == ["from kopf import on"]


def test_every_kopf_handler_is_of_a_kind_that_needs_no_per_object_memory() -> None:
    found: list[tuple[str, str]] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        kinds, hidden = kopf_registrations(path.read_text())
        where = str(path.relative_to(PACKAGE))
        found += [(where, kind) for kind in kinds] + [(where, line) for line in hidden]
    assert ("operator/handlers.py", "event") in found  # the walk sees the handlers
    assert [(path, kind) for path, kind in found if kind not in SERVED] == []
