"""Test servers' ports stay out of the range the kernel hands to outgoing connections."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import pytest

import kubetune.ports
from kubetune.ports import free_port, ports_below_the_ephemeral_range


def test_ports_are_bindable_below_the_ephemeral_range_and_avoid_those_handed_out() -> None:
    ports: list[int] = []
    for _ in range(50):
        ports.append(free_port(avoid=set(ports)))
    assert len(set(ports)) == len(ports)
    assert all(port in ports_below_the_ephemeral_range() for port in ports)
    with socket.socket() as server:
        server.bind(("127.0.0.1", ports[0]))


def test_a_port_in_use_is_never_handed_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "range").write_text("1030\t60999\n")
    monkeypatch.setattr(kubetune.ports, "_EPHEMERAL_RANGE", tmp_path / "range")
    assert ports_below_the_ephemeral_range() == range(1024, 1030)
    with contextlib.ExitStack() as held:
        for port in range(1024, 1029):
            server = held.enter_context(socket.socket())
            server.bind(("127.0.0.1", port))
        assert {free_port() for _ in range(20)} == {1029}
        assert free_port(avoid={1029}) not in range(1024, 1030)  # bind(0)'s pick


def test_an_ephemeral_client_port_is_never_picked() -> None:
    # What broke CI: a kubelet's connection held the operator's port. A client's local
    # port comes from the ephemeral range, which free_port never picks from.
    with socket.socket() as listener, socket.socket() as client:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client.connect(listener.getsockname())
        assert client.getsockname()[1] not in ports_below_the_ephemeral_range()
