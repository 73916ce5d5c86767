"""Runs kubetune's Argo CD health check (manifests/argocd/health.lua) in a real Lua.

Argo CD evaluates the script with `obj` bound to the resource as a Lua table and reads
`status` and `message` from the table it returns; lupa's Lua does the same here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HEALTH_LUA = REPO / "manifests" / "argocd" / "health.lua"
CM_PATCH = REPO / "manifests" / "argocd" / "argocd-cm-patch.yaml"
CM_KEY = "resource.customizations.health.kubetune.dev_HPOExperiment"


def health(obj: dict[str, Any], script: str | None = None) -> dict[str, str]:
    """What Argo CD shows for `obj`: {"status": ..., "message": ...}."""
    from lupa import LuaRuntime

    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script if script is not None else HEALTH_LUA.read_text())
    return {key: str(value) for key, value in dict(result).items()}
