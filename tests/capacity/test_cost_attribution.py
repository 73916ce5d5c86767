"""The cost of a window in which a pool booted for pods that started just at its end."""

from __future__ import annotations

import pytest

from kubetune.capacity.cost import Ledger, NodeSpan, UsageSpan

KEY = ("team", "exp")


def test_a_window_ending_when_its_waiting_pods_start_goes_to_them() -> None:
    # A node booted over [0, 120] for a pod bound at 120: the tick at 120 sees the pod
    # running (not waiting), with no GPU-second in the window yet.
    ledger = Ledger()
    node = NodeSpan("n1", "gpu", 0.0, None, 36.0)  # one cent a second
    pod = UsageSpan(KEY, "gpu", 1, 120.0, None)
    ledger.advance(0.0, 120.0, [node], [pod], {})
    ledger.advance(120.0, 180.0, [node], [pod], {})
    assert ledger.experiments[KEY] == pytest.approx(1.8)
    assert ledger.unattributed.get("gpu", 0.0) == pytest.approx(0.0)
