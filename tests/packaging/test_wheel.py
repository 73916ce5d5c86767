"""kubetune as installed from its wheel, not from the source tree: the wheel built from
a clean copy of the repository, installed (not editable) with its dependencies into a
fresh virtualenv, works from a folder that is not the repository:

* without extras: `kubetune validate`, a tiny `kubetune run` (random search, a trial
  script that uses the SDK from the same wheel: no torch needed), and `kubetune
  operator` says which extra it needs;
* then, in the same venv, with the `operator` extra: `kubetune operator --help` and the
  CRD generator (`python -m kubetune.crd`), which has no source tree's crds/ to default
  to there."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.packaging.sandbox import REPO, checked, clean_clone, new_venv

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

TRIAL = REPO / "tests" / "local" / "trials" / "quadratic.py"
EXPERIMENT = {
    "apiVersion": "kubetune.dev/v1alpha1",
    "kind": "HPOExperiment",
    "metadata": {"name": "wheel-smoke"},
    "spec": {
        "objective": {"metric": "loss", "goal": "minimize"},
        "parameters": [
            {"name": "x", "type": "float", "min": -1.0, "max": 1.0},
            {"name": "y", "type": "float", "min": -1.0, "max": 1.0},
        ],
        "algorithm": {"name": "random", "seed": 1},
        "budget": {"maxTrials": 2, "parallelTrials": 2},
        "trialTemplate": {
            "spec": {
                "containers": [
                    {"name": "trial", "image": "x", "command": ["python", "quadratic.py"]}
                ]
            }
        },
    },
}


def build_wheel(python: Path, source: Path, dist: Path) -> Path:
    checked([str(python), "-m", "pip", "wheel", str(source), "--no-deps", "-w", str(dist)])
    (wheel,) = dist.glob("kubetune-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("kubetune/cli.py", "kubetune/crd.py", "kubetune_trial/__init__.py"):
        assert module in names, f"{module} is not in {wheel.name}"
    assert not [n for n in names if n.startswith("tests/")], "the tests are not shipped"
    return wheel


def test_the_installed_wheel_works(tmp_path: Path) -> None:
    clone = clean_clone(tmp_path / "src")
    bin_dir = new_venv(tmp_path / "venv")
    python, kubetune = bin_dir / "python", str(bin_dir / "kubetune")
    wheel = build_wheel(python, clone, tmp_path / "dist")
    checked([str(python), "-m", "pip", "install", "-q", str(wheel)])

    work = tmp_path / "work"  # not the repository: nothing importable from here
    work.mkdir()
    (work / "quadratic.py").write_text(TRIAL.read_text())
    experiment = work / "experiment.yaml"
    experiment.write_text(yaml.safe_dump(EXPERIMENT))
    where = checked(
        [str(python), "-c", "import kubetune, kubetune_trial; print(kubetune.__file__)"],
        cwd=work,
    )
    assert where.stdout.strip().startswith(str(tmp_path / "venv" / "lib")), where.stdout

    assert "is valid" in checked([kubetune, "validate", str(experiment)], cwd=work).stdout
    results = work / "results.json"
    run = checked(
        [kubetune, "run", str(experiment), "--no-live", "--output", str(results)],
        cwd=work,
        timeout=300,
    )
    assert "Traceback" not in run.stdout, run.stdout
    assert re.search(r"^best trial \S+: loss=", run.stdout, re.MULTILINE), run.stdout
    trials = json.loads(results.read_text())["trials"]
    assert [t["state"] for t in trials] == ["Completed", "Completed"], trials

    # No operator extra: one line naming it, exit 2, no traceback.
    operator = checked([kubetune, "operator", "--help"], cwd=work, expect=2)
    assert operator.stdout.count("\n") == 1, operator.stdout
    assert "pip install 'kubetune[operator]'" in operator.stdout

    checked([str(python), "-m", "pip", "install", "-q", f"{wheel}[operator]"])
    assert "--endpoint-url" in checked([kubetune, "operator", "--help"], cwd=work).stdout
    crd = [str(python), "-m", "kubetune.crd"]
    checked([*crd, "--check", str(clone / "crds")], cwd=work)
    no_default = checked([*crd, "--check"], cwd=work, expect=2)
    assert "give --out DIR" in no_default.stdout, no_default.stdout
    checked([*crd, "--out", str(work / "crds")], cwd=work)
    for path in (clone / "crds").iterdir():
        assert (work / "crds" / path.name).read_text() == path.read_text(), path.name
