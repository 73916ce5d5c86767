"""kopf keeps no per-object memory for kubetune (operator/kopfmemories.py).

kopf's memories are where it keeps, per object seen, a copy of the memo and the
bookkeeping of throttling, daemons and indexes, until the object is deleted: about 1 KB
each, for every HPOTrial and pod of every experiment. kubetune's handlers read none of
it (tests/architecture/test_kopf_handlers.py keeps them so)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import kopf
import pytest

from kubetune import cli
from kubetune.operator import main as operator_main
from kubetune.operator.kopfmemories import EventOnlyMemories


def _pod(name: str) -> dict[str, Any]:
    metadata = {"namespace": "ns", "name": name, "uid": name}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata}


def test_each_event_gets_a_fresh_memory_and_nothing_is_kept() -> None:
    async def scenario() -> None:
        memories = EventOnlyMemories()
        memobase = kopf.Memo(registry="the registry")
        first = await memories.recall(_pod("a"), memobase=memobase)
        again = await memories.recall(_pod("a"), memobase=memobase, noticed_by_listing=True)
        for index in range(1000):
            await memories.recall(_pod(f"p{index}"), memobase=memobase)
        assert first is not again  # kopf's own keeps one per object: the same one
        assert first.memo is not memobase and first.memo.registry == "the registry"
        assert again.noticed_by_listing
        assert [memory async for memory in _daemon_memories(memories)] == []

    asyncio.run(scenario())


async def _daemon_memories(memories: EventOnlyMemories) -> Any:
    # What kopf walks at shutdown to stop daemons: every memory it remembers.
    for memory in memories.iter_all_daemon_memories():
        yield memory


def test_the_operator_runs_kopf_with_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The API server is a closed port: nothing is reached before kopf.run, which is caught.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    key = tmp_path / "key"
    key.write_text("k" * 32)
    seen: dict[str, Any] = {}
    monkeypatch.setattr(operator_main.kopf, "run", lambda **kwargs: seen.update(kwargs))
    argv = [
        "operator",
        f"--kubeconfig={kubeconfig}",
        f"--token-key-file={key}",
        "--endpoint-url=http://127.0.0.1:1",
        "--namespace=ns",
    ]
    assert operator_main.run(cli.build_parser(operator_arguments=True).parse_args(argv)) == 0
    assert isinstance(seen["memories"], EventOnlyMemories)
