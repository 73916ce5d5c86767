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


def kopf_decorators() -> list[tuple[str, str]]:
    """(module path, kind) of every `@kopf.on.<kind>`, `@kopf.daemon`, `@kopf.timer`,
    `@kopf.index` decorator in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                name = ast.unparse(target)
                if name.startswith("kopf.on."):
                    found.append((str(path.relative_to(PACKAGE)), name.removeprefix("kopf.on.")))
                elif name in ("kopf.daemon", "kopf.timer", "kopf.index"):
                    found.append((str(path.relative_to(PACKAGE)), name.removeprefix("kopf.")))
    return found


def test_every_kopf_handler_is_of_a_kind_that_needs_no_per_object_memory() -> None:
    found = kopf_decorators()
    assert ("operator/handlers.py", "event") in found  # the walk sees the handlers
    assert [(path, kind) for path, kind in found if kind not in SERVED] == []
