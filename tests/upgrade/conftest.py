"""An upgrade starts from a cluster the previous release was installed on: these tests
get a control plane of their own (the session's has the current CRDs applied already)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster import fixtures


@pytest.fixture(scope="module")
def control_plane() -> Iterator[Any]:
    from tests.cluster.controlplane import ControlPlane

    cp = ControlPlane(binaries=fixtures._binaries_or_skip())
    cp.start()
    fixtures._active["cp"] = cp  # the failure report hook shows its logs
    try:
        yield cp
    finally:
        fixtures._active["cp"] = None
        cp.stop()
