"""No process-global state in operator/kubetune: a module binds constants (tables,
patterns, frozen sets), never an instance of one of kubetune's own classes nor an
empty container to fill at run time. Per-process state (metrics, the operator's
controllers, the capacity loop) is made by whoever runs and passed in: kopf's memo for
the operator (kubetune.operator.main), the run for local mode."""

from __future__ import annotations

import ast

from tests.architecture.test_import_graph import MODULES

# Module-level objects that are not state, and why.
ALLOWED = {
    "kubetune.ingest:NOT_READY": "a sentinel: the resolver's answer, compared by identity",
    "kubetune.operator.resync:RESYNC_LOG": "a log-line rate limiter, not state of any experiment",
    "kubetune.operator.launching:LAUNCH_LOG": "a log-line rate limiter, as RESYNC_LOG",
    "kubetune.trials:GO_ON": "a frozen Verdict, shared by every report it answers (memory)",
}
MUTABLE_CALLS = {"dict", "list", "set", "defaultdict", "deque", "OrderedDict", "Counter"}


def _classes() -> set[str]:
    return {
        node.name
        for path in MODULES.values()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
    }


def _called(node: ast.AST) -> set[str]:
    names = set()
    for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
        func = call.func
        names.add(func.id if isinstance(func, ast.Name) else getattr(func, "attr", ""))
    return names


def module_state() -> dict[str, str]:
    classes = _classes()
    found = {}
    for name, path in MODULES.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            else:
                continue
            empty = isinstance(value, ast.Dict | ast.List | ast.Set) and not (
                getattr(value, "keys", None) or getattr(value, "elts", None)
            )
            called = _called(value)
            if empty or called & classes or called & MUTABLE_CALLS:
                for target in targets:
                    if isinstance(target, ast.Name):
                        found[f"{name}:{target.id}"] = ast.unparse(value)[:60]
    return found


def test_no_module_holds_process_state() -> None:
    assert {k: v for k, v in module_state().items() if k not in ALLOWED} == {}


def test_the_allowed_list_names_only_what_is_there() -> None:
    assert [k for k in ALLOWED if k not in module_state()] == []
