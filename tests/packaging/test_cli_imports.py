"""What `kubetune` imports per command: the README's first command installs kubetune
with the `torch` extra only, so every command but `operator` must run without the
`operator` extra (kopf, the Kubernetes client), and the quick ones (`--help`,
`validate`) must not pay for torch, Optuna's GP sampler or boto3."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "trial_image" / "examples" / "digits-asha.yaml"
# Heavy or optional packages: the operator extra's, torch (the GP sampler's), boto3.
HEAVY = ("torch", "optuna.samplers._gp", "kopf", "kubernetes", "boto3", "botocore")
OPERATOR_EXTRA = ("kopf", "kubernetes", "prometheus_client")

# Runs kubetune's entry point as the console script does, with some packages made
# unimportable (sys.modules[name] = None: import and find_spec both see no module),
# and writes the exit status and every module imported to a JSON file.
RUNNER = """
import json, sys
hidden, out, argv = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3:]
for name in hidden:
    sys.modules[name] = None
code = None
try:
    from kubetune.cli import main
    code = main(argv)
except SystemExit as stop:
    code = stop.code
finally:
    imported = sorted(m for m, module in sys.modules.items() if module is not None)
    with open(out, "w") as f:
        json.dump({"code": code, "modules": imported}, f)
sys.exit(code)
"""


def run_cli(
    tmp_path: Path, *argv: str, hidden: tuple[str, ...] = ()
) -> tuple[subprocess.CompletedProcess[str], int | None, list[str]]:
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(hidden), str(out), *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    result = json.loads(out.read_text())
    return done, result["code"], result["modules"]


def heavy_in(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


@pytest.mark.parametrize(
    "argv",
    [
        ("--help",),
        ("validate", str(EXAMPLE)),
        ("run", "--help"),
        ("convert", "--help"),
        ("--version",),
    ],
    ids=["help", "validate", "run-help", "convert-help", "version"],
)
def test_quick_commands_import_nothing_heavy(tmp_path: Path, argv: tuple[str, ...]) -> None:
    done, code, modules = run_cli(tmp_path, *argv, hidden=OPERATOR_EXTRA)
    assert code == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert heavy_in(modules) == []


def test_operator_without_its_extra_says_which_to_install(tmp_path: Path) -> None:
    for argv in (("operator", "--help"), ("operator", "--endpoint-url", "http://x")):
        done, code, _ = run_cli(tmp_path, *argv, hidden=("kopf",))
        assert code == 2, done.stderr
        assert done.stdout == ""
        assert done.stderr.count("\n") == 1, done.stderr
        assert "pip install 'kubetune[operator]'" in done.stderr
        assert "kopf" in done.stderr


def test_operator_help_with_its_extra(tmp_path: Path) -> None:
    done, code, modules = run_cli(tmp_path, "operator", "--help")
    assert code == 0, done.stderr
    assert "--endpoint-url" in done.stdout
    assert "kopf" in modules
