"""The operator fixtures of tests/operator, for the PBT tests on the control plane."""

from tests.operator.conftest import installed, operator

__all__ = ["installed", "operator"]
