"""A free TCP port for a server that binds it later (a local gang's rendezvous; tests'
API servers, etcd and operator)."""

from __future__ import annotations

import random
import socket
from collections.abc import Container
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ports_below_the_ephemeral_range() -> range:
    try:
        low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default; elsewhere only a bind check guards the pick
    return range(max(1024, low - 12000), max(1025, low))


def free_port(host: str = "127.0.0.1", avoid: Container[int] = ()) -> int:
    """A port nothing listens on at `host` now, chosen below the kernel's ephemeral range.

    A port from `bind(0)` comes from that range, so an outgoing connection (a trial's
    report, a kubelet's watch) may take it between the pick and the server's bind: a
    test operator once failed to bind its port for minutes that way. Ports below the
    range are only ever taken by an explicit bind. `avoid`: ports already handed to
    servers that may not have bound them yet."""
    rng = random.SystemRandom()
    candidates = ports_below_the_ephemeral_range()
    for _ in range(200):
        port = rng.choice(candidates)
        if port in avoid:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
