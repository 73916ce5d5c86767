"""kopf keeps no per-object memory for kubetune (operator/kopfmemories.py).

kopf's memories are where it keeps, per object seen, a copy of the memo and the
bookkeeping of throttling, daemons and indexes, until the object is deleted: about 1 KB
each, for every HPOTrial and pod of every experiment. kubetune's handlers read none of
it (tests/architecture/test_kopf_handlers.py keeps them so)."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import weakref
from pathlib import Path
from typing import Any

import kopf
import pytest

from kubetune import cli
from kubetune.operator import main as operator_main
from kubetune.operator.kopfmemories import EventOnlyMemories, event_only_memories


def _pod(name: str) -> dict[str, Any]:
    metadata = {"namespace": "ns", "name": name, "uid": name}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata}


def test_each_event_gets_a_fresh_memory_and_nothing_is_kept() -> None:
    async def scenario() -> None:
        memories = EventOnlyMemories()
        memobase = kopf.Memo(registry="the registry")
        first = await memories.recall(_pod("a"), memobase=memobase)
        again = await memories.recall(_pod("a"), memobase=memobase, noticed_by_listing=True)
        kept = weakref.ref(await memories.recall(_pod("b"), memobase=memobase))
        gc.collect()
        assert kept() is None  # nothing refers to it once the event is handled
        assert first is not again  # kopf's own keeps one per object: the same one
        assert first.memo is not memobase and first.memo.registry == "the registry"
        assert again.noticed_by_listing

    asyncio.run(scenario())


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
    # run() sets the process's logging up (the root logger's handlers replaced): not in
    # the test process, whose other tests' log capture it would take over.
    monkeypatch.setattr(operator_main.observability, "configure_logging", lambda *_: None)
    for noisy in ("kopf.objects", "aiohttp.access"):  # run() raises them: put back after
        monkeypatch.setattr(logging.getLogger(noisy), "level", logging.getLogger(noisy).level)
    argv = [
        "operator",
        f"--kubeconfig={kubeconfig}",
        f"--token-key-file={key}",
        "--endpoint-url=http://127.0.0.1:1",
        "--namespace=ns",
    ]
    assert operator_main.run(cli.build_parser(operator_arguments=True).parse_args(argv)) == 0
    assert isinstance(seen["memories"], EventOnlyMemories)


def test_options_kopf_adds_to_recall_are_passed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from kopf._core.reactor import inventory

    async def recall(self: object, raw_body: object, **options: object) -> object:
        return options

    monkeypatch.setattr(inventory.ResourceMemories, "recall", recall)
    memories = event_only_memories()
    options = asyncio.run(memories.recall(_pod("a"), memobase=None, some_later_option=1))
    assert options == {"memobase": None, "some_later_option": 1, "ephemeral": True}
