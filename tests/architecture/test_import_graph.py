"""The import graph of operator/kubetune, read with ast: edges point one way.

Engine and policies at the bottom, the shells (local runner, operator) above them, the
capacity loop and observability beside the operator without importing it; they meet in
neutral modules (names, kubeevents, placement). Imports under `if TYPE_CHECKING:` are
not edges (nothing runs them); imports inside functions are.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "operator"
PACKAGE = ROOT / "kubetune"

# The process entry point composes the operator with the capacity loop.
COMPOSITION_ROOTS = {"kubetune.operator.main"}
# Modules that persist histories: they ask the scheduler (SchedulerPolicy), never import a rule.
STORAGE = {"kubetune.operator.store", "kubetune.local.state", "kubetune.events"}
# The bottom layer: decisions, no I/O shell.
CORE = {
    "kubetune.engine",
    "kubetune.spec",
    "kubetune.space",
    "kubetune.grid",
    "kubetune.trials",
    "kubetune.events",
    "kubetune.samplers",
    "kubetune.startup",
    "kubetune.schedulers",
}
SHELLS = ("kubetune.operator", "kubetune.local", "kubetune.capacity", "kubetune.cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            for other in node.orelse:
                yield from _imports(ast.Module(body=[other], type_ignores=[]))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _imports(node)


def imports_of(name: str) -> dict[str, set[str]]:
    """The kubetune modules `name` imports at run time, each with the names taken from it."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, set[str]] = {}
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("kubetune"):
                    found.setdefault(alias.name, set())
            continue
        base = node.module or ""
        if node.level:
            parts = package.split(".")
            base = ".".join([*parts[: len(parts) - node.level + 1], base]).rstrip(".")
        if not base.startswith("kubetune"):
            continue
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            if submodule in MODULES:
                found.setdefault(submodule, set())
            else:
                found.setdefault(base, set()).add(alias.name)
    return {target: names for target, names in found.items() if target != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_every_import_resolves_to_a_module_of_the_package() -> None:
    unknown = {(a, b) for a, edges in GRAPH.items() for b in edges if b not in MODULES}
    assert not unknown


def test_capacity_and_operator_meet_only_in_neutral_modules() -> None:
    crossing = [
        (a, b)
        for a, edges in GRAPH.items()
        for b in edges
        if a not in COMPOSITION_ROOTS
        and (
            (within(a, "kubetune.capacity") and within(b, "kubetune.operator"))
            or (within(a, "kubetune.operator") and within(b, "kubetune.capacity"))
        )
    ]
    assert crossing == []


def test_observability_imports_no_shell() -> None:
    shells = [
        (a, b)
        for a, edges in GRAPH.items()
        if within(a, "kubetune.observability")
        for b in edges
        if any(within(b, shell) for shell in SHELLS)
    ]
    assert shells == []


def test_the_core_imports_no_shell_and_no_observability() -> None:
    upward = [
        (a, b)
        for a, edges in GRAPH.items()
        if any(within(a, core) for core in CORE)
        for b in edges
        if any(within(b, shell) for shell in SHELLS) or within(b, "kubetune.observability")
    ]
    assert upward == []


def test_storage_asks_the_scheduler_and_imports_no_rule_of_it() -> None:
    """Which reports survive compaction is the policy's answer (SchedulerPolicy.must_keep)."""
    rules = [
        (a, b, sorted(names - {"SchedulerPolicy"}))
        for a in STORAGE
        for b, names in GRAPH[a].items()
        if within(b, "kubetune.schedulers") and (names - {"SchedulerPolicy"} or not names)
    ]
    assert rules == []


def test_spec_and_space_do_not_import_each_other() -> None:
    assert "kubetune.space" not in GRAPH["kubetune.spec"]


def test_no_import_cycles() -> None:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(GRAPH.get(node, {})):
            # A package's __init__ importing its own submodules is how packages re-export.
            if within(target, node):
                continue
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif state.get(target) is None:
                visit(target)
        path.pop()
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)
    assert cycles == []


def test_samplers_reach_optuna_s_storage_through_its_public_api() -> None:
    """Study and trial ids come from the storage kubetune creates (InMemoryStorage's
    public methods), not from Optuna's private attributes."""
    tree = ast.parse(MODULES["kubetune.samplers"].read_text())
    private = {"_storage", "_study_id", "_trial_id"}
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} & private
    assert used == set()


# One experiment's controller, in parts (docs/architecture.md): each imports only parts
# listed before it, and none imports the controller that composes them.
OPERATOR_PARTS = [
    "kubetune.operator.experiment",
    "kubetune.operator.ownership",
    "kubetune.operator.history",
    "kubetune.operator.authorship",
    "kubetune.operator.writes",
    "kubetune.operator.actions",
    "kubetune.operator.podwatch",
    "kubetune.operator.repair",
    "kubetune.operator.rebuild",
    "kubetune.operator.controller",
]


def test_the_operator_s_parts_import_only_parts_below_them() -> None:
    upward = [
        (a, b)
        for i, a in enumerate(OPERATOR_PARTS)
        for b in GRAPH[a]
        if b in OPERATOR_PARTS[i + 1 :]
    ]
    assert upward == []
    composers = {a for a, edges in GRAPH.items() if "kubetune.operator.controller" in edges}
    assert composers <= {"kubetune.operator.handlers", "kubetune.operator.main"}
