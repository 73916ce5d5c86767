"""Converted Katib examples are accepted by the real API server with kubetune's CRDs
(structural schema and CEL rules), not only by `kubetune validate`."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.convert.katib import main as convert_main
from tests.convert.test_katib import CONVERTIBLE

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def crds(control_plane: Any) -> Any:
    control_plane.kubectl("apply", "-f", str(REPO / "crds" / "hpoexperiments.kubetune.dev.yaml"))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd/hpoexperiments.kubetune.dev", "--timeout=60s"
    )
    return control_plane


@pytest.mark.parametrize("path", CONVERTIBLE, ids=lambda p: p.stem)
def test_the_api_server_accepts_a_converted_example(crds: Any, namespace: str, path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert convert_main(path, out, err) == 0, err.getvalue()
    document = yaml.safe_load(out.getvalue())
    document["metadata"]["namespace"] = namespace
    # JSON, not YAML: kubectl reads YAML 1.1.
    result = crds.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(document), check=False
    )
    assert result.returncode == 0, result.stderr
