"""The operator tests' fixtures (the manifests installed, the operator as a process)."""

from tests.operator.conftest import installed, operator

__all__ = ["installed", "operator"]
