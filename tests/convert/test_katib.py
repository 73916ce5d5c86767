"""`kubetune convert katib FILE` on Katib's published examples (re-written by hand).

Each fixture either converts to an experiment that `kubetune validate` accepts, with a
comment for each lossy mapping, or is refused with exit 2, one line per field naming the
Katib field path, and nothing on stdout.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubetune.cli import main
from kubetune.convert.katib import Refused, convert
from kubetune.spec import parse_experiment

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CONVERTIBLE = sorted((FIXTURES / "convertible").glob("*.yaml"))
REFUSED = sorted((FIXTURES / "refused").glob("*.yaml"))

# The Katib fields each refused example is refused for (every line names one of them).
REFUSED_FIELDS = {
    "custom-metrics-collector": {"spec.metricsCollectorSpec.collector.kind"},
    "darts": {
        "spec.parameters",
        "spec.algorithm.algorithmName",
        "spec.metricsCollectorSpec.source.filter.metricsFormat",
        "spec.nasConfig",
        "spec.trialTemplate.trialParameters[0].reference",
    },
    "file-metrics-collector": {"spec.metricsCollectorSpec.collector.kind"},
    "hyperband": {"spec.algorithm.algorithmName"},
    "hyperopt-distribution": {
        "spec.parameters[0].feasibleSpace.distribution",
        "spec.parameters[1].feasibleSpace.distribution",
    },
    "pbt": {"spec.algorithm.algorithmName", "spec.resumePolicy"},
    "pytorchjob-mnist": {"spec.trialTemplate.trialSpec.kind"},
    "tfjob-mnist-with-summaries": {
        "spec.metricsCollectorSpec.collector.kind",
        "spec.trialTemplate.trialSpec.kind",
    },
    "trial-metadata": {
        "spec.maxTrialCount",
        "spec.resumePolicy",
        "spec.trialTemplate.trialParameters[1].reference",
        "spec.trialTemplate.trialSpec.spec.template.spec.containers[0].volumeMounts[0].mountPath",
    },
}


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        code = main(list(argv))
    finally:
        sys.stdout, sys.stderr = saved
    return code, out.getvalue(), err.getvalue()


def test_every_fixture_is_sorted_into_an_expectation() -> None:
    assert len(CONVERTIBLE) >= 10 and len(REFUSED) >= 9
    assert {p.stem for p in REFUSED} == set(REFUSED_FIELDS)


@pytest.mark.parametrize("path", CONVERTIBLE, ids=lambda p: p.stem)
def test_a_convertible_example_passes_kubetune_validate(path: Path, tmp_path: Path) -> None:
    code, out, err = run_cli("convert", "katib", str(path))
    assert (code, err) == (0, ""), err
    converted = tmp_path / f"{path.stem}.yaml"
    converted.write_text(out)
    code, said, err = run_cli("validate", str(converted))
    assert code == 0, err
    assert f"HPOExperiment {path.stem} is valid" in said
    header = out.split("apiVersion:")[0]
    assert header.startswith("# Converted by `kubetune convert katib`")
    assert all(line.startswith("#") for line in header.splitlines())


@pytest.mark.parametrize("path", REFUSED, ids=lambda p: p.stem)
def test_an_unconvertible_example_is_refused_naming_each_field(path: Path) -> None:
    code, out, err = run_cli("convert", "katib", str(path))
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    named = {line.removeprefix(f"{path}: ").split(": ")[0] for line in lines}
    assert named == REFUSED_FIELDS[path.stem]
    assert len(lines) == len(named), "one line per field"


def converted(name: str) -> tuple[dict, str]:
    code, out, err = run_cli("convert", "katib", str(FIXTURES / "convertible" / f"{name}.yaml"))
    assert code == 0, err
    return yaml.safe_load(out), out


def test_random_maps_goal_counts_names_and_placeholders() -> None:
    document, text = converted("random")
    spec = document["spec"]
    assert document["metadata"] == {"name": "random", "namespace": "kubeflow"}
    assert spec["objective"] == {
        "metric": "Validation_accuracy",
        "goal": "maximize",
        "target": 0.99,
    }
    assert spec["algorithm"] == {"name": "random"}
    assert spec["budget"] == {"maxTrials": 12, "parallelTrials": 3, "maxFailedTrials": 3}
    assert spec["parameters"] == [
        {"name": "lr", "type": "float", "min": 0.01, "max": 0.03},
        {"name": "num_layers", "type": "int", "min": 2, "max": 5},
        {"name": "optimizer", "type": "categorical", "values": ["sgd", "adam", "ftrl"]},
    ]
    container = spec["trialTemplate"]["spec"]["containers"][0]
    assert container["command"][-3:] == [
        "--lr={{params.lr}}",
        "--num-layers={{params.num_layers}}",
        "--optimizer={{params.optimizer}}",
    ]
    # Each lossy mapping is a comment at the top.
    assert "# - spec.objective.objectiveMetricName: the metric 'Validation-accuracy'" in text
    assert "# - spec.parameters[1].name: 'num-layers' is 'num_layers'" in text
    assert "# - spec.objective.additionalMetricNames: dropped" in text
    assert "# - spec.objective.metricStrategies: Katib took the max" in text


def test_algorithms_and_their_settings() -> None:
    names = {
        "grid": "grid",
        "sobol": "sobol",
        "tpe": "tpe",
        "multivariate-tpe": "tpe",
        "cmaes": "cmaes",
        "bayesian-optimization": "bayesian",
    }
    for fixture, algorithm in names.items():
        assert converted(fixture)[0]["spec"]["algorithm"]["name"] == algorithm
    bayesian, text = converted("bayesian-optimization")
    assert bayesian["spec"]["algorithm"] == {"name": "bayesian", "seed": 10, "startupTrials": 5}
    assert "acq_func=gp_hedge (kubetune uses Optuna's default)" in text
    assert "restart_strategy=ipop" in converted("cmaes")[1]
    grid = converted("grid")[0]["spec"]
    assert grid["parameters"][0] == {
        "name": "lr",
        "type": "float",
        "min": 0.001,
        "max": 0.01,
        "step": 0.001,
    }
    assert grid["trialTemplate"]["spec"]["containers"][0]["args"][0] == "--lr={{params.lr}}"


def test_median_stop_distributions_containers_and_job_fields() -> None:
    median, text = converted("median-stop")
    scheduler = median["spec"]["scheduler"]
    assert (scheduler["name"], scheduler["minTrials"], scheduler["warmupSteps"]) == ("median", 1, 2)
    assert "metricStrategies" not in text  # latest is what kubetune does
    assert "spec.trialTemplate.trialSpec.spec.backoffLimit: dropped" in text
    assert median["spec"]["trialTemplate"]["metadata"] == {"labels": {"team": "vision"}}

    optuna, text = converted("optuna-distribution")
    parameters = {p["name"]: p for p in optuna["spec"]["parameters"]}
    assert parameters["lr"] == {"name": "lr", "type": "float", "min": 1, "max": 5, "step": 0.1}
    assert parameters["momentum"]["scale"] == "log" and "step" not in parameters["momentum"]
    assert parameters["batch_size"]["scale"] == "log"
    assert parameters["dropout"] == {
        "name": "dropout",
        "type": "categorical",
        "values": [0.1, 0.25, 0.5],
    }
    pod = optuna["spec"]["trialTemplate"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["training-container", "log-shipper"]
    assert pod["containers"][0]["env"] == [{"name": "DROPOUT", "value": "{{params.dropout}}"}]
    assert pod["restartPolicy"] == "Never"
    assert "restartPolicy: OnFailure is Never" in text
    assert "training-container moved first" in text


def test_resume_policy_never_converts_with_a_note() -> None:
    document, text = converted("never-resume")
    assert document["metadata"]["name"] == "never-resume"
    assert "# - spec.resumePolicy: Never: a kubetune experiment whose budget is raised" in text


def test_push_collector_defaults_and_no_goal() -> None:
    document, text = converted("push-collector")
    assert "target" not in document["spec"]["objective"]
    assert document["spec"]["budget"] == {"maxTrials": 8, "parallelTrials": 3}
    assert "spec.parallelTrialCount: unset: Katib's default 3" in text
    assert "Push: trials report with kubetune_trial.report" in text
    assert document["spec"]["algorithm"] == {"name": "random", "seed": 42}


def test_what_kubetune_itself_refuses_is_named_in_katib_terms() -> None:
    document = yaml.safe_load((FIXTURES / "convertible" / "grid.yaml").read_text())
    document["spec"]["maxTrialCount"] = 0
    with pytest.raises(Refused) as refused:
        convert(document)
    ((path, reason),) = refused.value.problems
    assert path == "spec.maxTrialCount"
    assert reason.startswith("kubetune refuses the converted spec.budget.maxTrials:")
    document = yaml.safe_load((FIXTURES / "convertible" / "grid.yaml").read_text())
    del document["spec"]["parameters"][0]["feasibleSpace"]["step"]  # a grid needs it
    with pytest.raises(Refused) as refused:
        convert(document)
    assert [p for p, _ in refused.value.problems] == ["spec.parameters[0].feasibleSpace.step"]


def test_names_that_collide_once_made_identifiers_are_refused() -> None:
    document = yaml.safe_load((FIXTURES / "convertible" / "random.yaml").read_text())
    document["spec"]["parameters"][0]["name"] = "num_layers"
    document["spec"]["trialTemplate"]["trialParameters"][0]["reference"] = "num_layers"
    with pytest.raises(Refused) as refused:
        convert(document)
    assert [p for p, _ in refused.value.problems] == ["spec.parameters[1].name"]


def test_a_parameter_fixed_by_min_equal_max_is_a_one_value_categorical() -> None:
    document = yaml.safe_load((FIXTURES / "convertible" / "random.yaml").read_text())
    document["spec"]["parameters"][1]["feasibleSpace"] = {"min": "3", "max": "3"}
    result = convert(document)
    assert result.document["spec"]["parameters"][1] == {
        "name": "num_layers",
        "type": "categorical",
        "values": [3],
    }
    parse_experiment(result.document)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("kind: Experiment\napiVersion: kubeflow.org/v1alpha3\n", "expected apiVersion"),
        ("a: [1\n", "not valid YAML"),
        ("", "expected exactly one Katib Experiment, found 0"),
    ],
)
def test_files_that_are_no_katib_experiment_are_refused(
    tmp_path: Path, text: str, line: str
) -> None:
    path = tmp_path / "in.yaml"
    path.write_text(text)
    code, out, err = run_cli("convert", "katib", str(path))
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and line in err


def test_the_console_script_prints_yaml_on_stdout_only() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kubetune.cli", "convert", "katib", str(CONVERTIBLE[0])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stderr == ""
    assert yaml.safe_load(result.stdout)["kind"] == "HPOExperiment"
