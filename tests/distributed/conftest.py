"""The operator fixtures of tests/operator, for the distributed tests on the control plane."""

from tests.operator.conftest import installed, operator

__all__ = ["installed", "operator"]
