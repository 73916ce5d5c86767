"""Katib `kubeflow.org/v1beta1` `Experiment` -> kubetune `HPOExperiment`.

`convert(document)` is pure: it returns the HPOExperiment and a note for each mapping
that changes behaviour (printed as comments at the top of the YAML), or raises
`Refused` with one `(katib field path, why)` per field that has no kubetune equivalent.
Nothing half-converted is ever printed: a refusal prints no YAML at all.

What maps (issue 17): objective type/metric/goal (goal as `objective.target`); the
algorithms random, grid, sobol, tpe, multivariate-tpe, cmaes and bayesianoptimization
with `random_state` as `seed`; parameters double/int/categorical/discrete with
min/max/list/step and the uniform/logUniform distributions; the trial counts;
`earlyStopping` medianstop; a `trialTemplate` whose `trialSpec` is a batch/v1 Job, its
`${trialParameters.X}` placeholders turned into `{{params.P}}` through each trial
parameter's `reference`. Anything else is refused, naming the field.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubetune.spec import (
    API_VERSION,
    KIND,
    NAME_PATTERN,
    OBJECT_NAME_PATTERN,
    SpecError,
    load_yaml_documents,
    parse_experiment,
)

KATIB_API_VERSION = "kubeflow.org/v1beta1"
KATIB_KIND = "Experiment"

ALGORITHMS = {
    "random": "random",
    "grid": "grid",
    "sobol": "sobol",
    "tpe": "tpe",
    "multivariate-tpe": "tpe",
    "cmaes": "cmaes",
    "bayesianoptimization": "bayesian",
}
# Why the other Katib algorithms are refused.
UNSUPPORTED_ALGORITHMS = {
    "hyperband": "Katib's hyperband is a suggestion algorithm that passes the resource as "
    "a parameter; kubetune's hyperband is a scheduler (scheduler.name: hyperband with a "
    "resource the trials report): write it by hand",
    "pbt": "kubetune has no population based training",
    "enas": "neural architecture search (ENAS) has no kubetune equivalent",
    "darts": "neural architecture search (DARTS) has no kubetune equivalent",
}
# Settings that map onto kubetune's algorithm fields, per Katib algorithm.
STARTUP_SETTINGS = {
    "tpe": "n_startup_trials",
    "multivariate-tpe": "n_startup_trials",
    "bayesianoptimization": "n_initial_points",
    "cmaes": "n_startup_trials",
}
# Katib's medianstop defaults (its documentation), set explicitly: kubetune's differ.
MEDIAN_MIN_TRIALS = 3
MEDIAN_START_STEP = 4
# Katib's median rule has no resource: kubetune counts a trial's reports as its steps and
# never ends a trial at maxResource (a trial far longer than this ends on its own first).
MEDIAN_MAX_RESOURCE = 1_000_000
KATIB_PARALLEL_DEFAULT = 3
TRIAL_PARAMETER = re.compile(r"\$\{trialParameters\.([^}]*)\}")
SEED_MAX = 2**31 - 1


class Refused(ValueError):
    """A Katib experiment that cannot be converted: one (katib path, reason) per field."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(f"{path}: {reason}" for path, reason in self.problems))


@dataclass
class Conversion:
    document: dict[str, Any]
    notes: list[tuple[str, str]] = field(default_factory=list)  # (katib path, what changed)
    source: str = ""


@dataclass
class _Work:
    """What one conversion has found so far: every problem is collected, not just the first."""

    problems: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)

    def refuse(self, path: str, reason: str) -> None:
        self.problems.append((path, reason))

    def note(self, path: str, change: str) -> None:
        self.notes.append((path, change))


# ----- the conversion ---------------------------------------------------------------


def convert(katib: Mapping[str, Any], source: str = "") -> Conversion:
    """The HPOExperiment for a Katib Experiment; `Refused` naming each field that has none."""
    work = _Work()
    if not isinstance(katib, Mapping):
        raise Refused([("", "expected a mapping (a Katib Experiment)")])
    if katib.get("apiVersion") != KATIB_API_VERSION or katib.get("kind") != KATIB_KIND:
        found = f"{katib.get('apiVersion')}/{katib.get('kind')}"
        raise Refused(
            [("", f"expected apiVersion {KATIB_API_VERSION} kind Experiment, got {found}")]
        )
    spec = katib.get("spec")
    if not isinstance(spec, Mapping):
        raise Refused([("spec", "required")])
    metadata = _metadata(katib.get("metadata"), work)
    objective = _objective(spec.get("objective"), work)
    renamed = _parameter_names(spec.get("parameters"), work)
    parameters = _parameters(spec.get("parameters"), renamed, work)
    algorithm = _algorithm(spec.get("algorithm"), work)
    scheduler = _early_stopping(spec.get("earlyStopping"), work)
    budget = _budget(spec, work)
    _metrics_collector(spec.get("metricsCollectorSpec"), work)
    _refused_fields(spec, work)
    template = _trial_template(spec.get("trialTemplate"), renamed, work)
    if work.problems:
        raise Refused(work.problems)
    out_spec: dict[str, Any] = {
        "objective": objective,
        "parameters": parameters,
        "algorithm": algorithm,
    }
    if scheduler is not None:
        out_spec["scheduler"] = scheduler
    out_spec["budget"] = budget
    out_spec["trialTemplate"] = template
    document = {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": out_spec}
    _check_valid(document)
    return Conversion(document, work.notes, source)


def _metadata(metadata: Any, work: _Work) -> dict[str, Any]:
    metadata = metadata if isinstance(metadata, Mapping) else {}
    name = metadata.get("name")
    out: dict[str, Any] = {"name": name}
    if not isinstance(name, str) or not name:
        work.refuse("metadata.name", "required")
    elif len(name) > 50 or not re.match(OBJECT_NAME_PATTERN, name):
        work.refuse(
            "metadata.name",
            f"{name!r}: kubetune experiment names are DNS labels of at most 50 characters "
            f"(trial and pod names are derived from them)",
        )
    if metadata.get("namespace"):
        out["namespace"] = metadata["namespace"]
    for key in ("labels", "annotations"):
        kept = {
            k: v
            for k, v in (metadata.get(key) or {}).items()
            if k != "kubectl.kubernetes.io/last-applied-configuration"
        }
        if kept:
            out[key] = kept
    return out


def _identifier(name: str) -> str:
    """A Katib name (`num-layers`, `Validation-accuracy`) as a kubetune identifier."""
    out = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return out if re.match(NAME_PATTERN, out) else f"p_{out}"


def _objective(objective: Any, work: _Work) -> dict[str, Any]:
    path = "spec.objective"
    if not isinstance(objective, Mapping):
        work.refuse(path, "required")
        return {}
    goal = objective.get("type")
    if goal not in ("minimize", "maximize"):
        work.refuse(f"{path}.type", f"must be minimize or maximize, got {goal!r}")
    metric = objective.get("objectiveMetricName")
    out: dict[str, Any] = {"metric": metric, "goal": goal}
    if not isinstance(metric, str) or not metric:
        work.refuse(f"{path}.objectiveMetricName", "required")
    else:
        out["metric"] = _identifier(metric)
        if out["metric"] != metric:
            work.note(
                f"{path}.objectiveMetricName",
                f"the metric {metric!r} is {out['metric']!r}: kubetune's metric names are "
                f"identifiers, so trials must report {out['metric']} (a log line "
                f"`{out['metric']}=VALUE`, or kubetune_trial.report)",
            )
    if objective.get("goal") is not None:
        target = _number(objective["goal"], f"{path}.goal", work)
        if target is not None:
            out["target"] = target
    if objective.get("additionalMetricNames"):
        work.note(
            f"{path}.additionalMetricNames",
            "dropped: kubetune keeps every metric a trial reports without declaring it",
        )
    strategy = "max" if goal == "maximize" else "min"  # Katib's default for the objective
    for index, entry in enumerate(objective.get("metricStrategies") or []):
        if isinstance(entry, Mapping) and entry.get("name") == metric:
            strategy = str(entry.get("value"))
            if strategy not in ("min", "max", "latest"):
                work.refuse(f"{path}.metricStrategies[{index}].value", f"unknown {strategy!r}")
    if strategy != "latest":
        work.note(
            f"{path}.metricStrategies",
            f"Katib took the {strategy} of a trial's reports as its value; kubetune takes "
            f"its latest report",
        )
    return out


def _parameter_names(parameters: Any, work: _Work) -> dict[str, str]:
    """Katib parameter name -> kubetune parameter name (identifiers), checked unique."""
    renamed: dict[str, str] = {}
    taken: dict[str, str] = {}
    for index, parameter in enumerate(parameters if isinstance(parameters, list) else []):
        name = parameter.get("name") if isinstance(parameter, Mapping) else None
        if not isinstance(name, str) or not name:
            continue  # refused with the parameter
        new = _identifier(name)
        clash = taken.get(new.upper())
        if clash is not None:
            work.refuse(
                f"spec.parameters[{index}].name",
                f"{name!r} and {clash!r} would both become {new!r} (or its KUBETUNE_PARAM_ "
                f"variable): rename one",
            )
        taken[new.upper()] = name
        renamed[name] = new
    return renamed


def _parameters(parameters: Any, renamed: Mapping[str, str], work: _Work) -> list[dict[str, Any]]:
    if not isinstance(parameters, list) or not parameters:
        work.refuse("spec.parameters", "required: a non-empty list")
        return []
    out = []
    for index, parameter in enumerate(parameters):
        path = f"spec.parameters[{index}]"
        if not isinstance(parameter, Mapping) or not parameter.get("name"):
            work.refuse(f"{path}.name", "required")
            continue
        converted = _parameter(parameter, renamed[parameter["name"]], path, work)
        if converted is not None:
            out.append(converted)
    return out


def _parameter(
    parameter: Mapping[str, Any], name: str, path: str, work: _Work
) -> dict[str, Any] | None:
    original = parameter["name"]
    if name != original:
        work.note(
            f"{path}.name",
            f"{original!r} is {name!r} (its environment variable KUBETUNE_PARAM_"
            f"{name.upper()}); the command line is unchanged",
        )
    kind = parameter.get("parameterType")
    space = parameter.get("feasibleSpace")
    if not isinstance(space, Mapping):
        work.refuse(f"{path}.feasibleSpace", "required")
        return None
    space_path = f"{path}.feasibleSpace"
    distribution = space.get("distribution") or "uniform"
    if distribution not in ("uniform", "logUniform"):
        work.refuse(
            f"{space_path}.distribution",
            f"{distribution!r}: kubetune samples uniformly or log-uniformly only",
        )
        return None
    if kind in ("categorical", "discrete"):
        return _list_parameter(kind, space, name, space_path, work)
    if kind not in ("double", "int"):
        work.refuse(
            f"{path}.parameterType", f"{kind!r}: must be double, int, categorical or discrete"
        )
        return None
    if space.get("list") is not None:
        work.refuse(f"{space_path}.list", f"not used by {kind} parameters (give min and max)")
        return None
    integer = kind == "int"
    low = _number(space.get("min"), f"{space_path}.min", work, integer=integer)
    high = _number(space.get("max"), f"{space_path}.max", work, integer=integer)
    if low is None or high is None:
        return None
    if low == high:
        work.note(space_path, f"min equals max: {name} is a categorical of the one value {low}")
        return {"name": name, "type": "categorical", "values": [low]}
    out: dict[str, Any] = {
        "name": name,
        "type": "int" if integer else "float",
        "min": low,
        "max": high,
    }
    log = distribution == "logUniform"
    if log:
        out["scale"] = "log"
    if space.get("step") is not None:
        step = _number(space["step"], f"{space_path}.step", work, integer=integer)
        if step is not None and step <= 0:
            work.refuse(f"{space_path}.step", f"must be greater than 0, got {step}")
        elif step is not None and log and step != 1:
            work.note(
                f"{space_path}.step", "dropped: kubetune has no step on a log scale (logUniform)"
            )
        elif step is not None and not (integer and step == 1):
            out["step"] = step
    return out


def _list_parameter(
    kind: str, space: Mapping[str, Any], name: str, path: str, work: _Work
) -> dict[str, Any] | None:
    values = space.get("list")
    if not isinstance(values, list) or not values:
        work.refuse(f"{path}.list", f"required by {kind} parameters: a non-empty list")
        return None
    if kind == "categorical":
        return {"name": name, "type": "categorical", "values": [str(v) for v in values]}
    numbers = [_number(v, f"{path}.list[{i}]", work) for i, v in enumerate(values)]
    if any(n is None for n in numbers):
        return None
    work.note(
        path.removesuffix(".feasibleSpace") + ".parameterType",
        f"discrete {name} is a categorical of its numbers: samplers no longer see them as ordered",
    )
    return {"name": name, "type": "categorical", "values": numbers}


def _number(value: Any, path: str, work: _Work, *, integer: bool = False) -> int | float | None:
    """Katib writes numbers as strings ("0.01"); an integer stays an int when it is one."""
    try:
        number = float(str(value).strip()) if not isinstance(value, bool) else math.nan
    except ValueError:
        number = math.nan
    if value is None:
        work.refuse(path, "required")
        return None
    if not math.isfinite(number):
        work.refuse(path, f"{value!r} is not a finite number")
        return None
    if integer and not number.is_integer():
        work.refuse(path, f"{value!r} is not an integer")
        return None
    if number.is_integer() and (integer or re.fullmatch(r"\s*-?\d+\s*", str(value))):
        return int(number)
    return number


def _algorithm(algorithm: Any, work: _Work) -> dict[str, Any]:
    path = "spec.algorithm"
    if not isinstance(algorithm, Mapping) or not algorithm.get("algorithmName"):
        work.refuse(f"{path}.algorithmName", "required")
        return {}
    name = algorithm["algorithmName"]
    if name not in ALGORITHMS:
        reason = UNSUPPORTED_ALGORITHMS.get(name, f"{name!r} has no kubetune equivalent")
        work.refuse(f"{path}.algorithmName", reason)
        return {}
    out: dict[str, Any] = {"name": ALGORITHMS[name]}
    if name == "tpe":
        work.note(
            f"{path}.algorithmName",
            "tpe: kubetune's TPE is multivariate (Katib's tpe samples each parameter alone)",
        )
    for index, setting in enumerate(algorithm.get("algorithmSettings") or []):
        where = f"{path}.algorithmSettings[{index}]"
        key = setting.get("name") if isinstance(setting, Mapping) else None
        value = setting.get("value") if isinstance(setting, Mapping) else None
        if key == "random_state":
            seed = _number(value, f"{where}.value", work, integer=True)
            if seed is not None and not 0 <= seed <= SEED_MAX:
                work.refuse(f"{where}.value", f"a seed must be 0 to {SEED_MAX}, got {seed}")
            elif seed is not None:
                out["seed"] = seed
                work.note(
                    where, "random_state is seed: the search is repeatable, not Katib's sequence"
                )
        elif key is not None and key == STARTUP_SETTINGS.get(name):
            startup = _number(value, f"{where}.value", work, integer=True)
            if startup is not None and startup < 0:
                work.refuse(f"{where}.value", f"must be 0 or more, got {startup}")
            elif startup is not None:
                out["startupTrials"] = startup
        else:
            work.note(where, f"ignored: {key}={value} (kubetune uses Optuna's default)")
    return out


def _early_stopping(early: Any, work: _Work) -> dict[str, Any] | None:
    if early is None:
        return None
    path = "spec.earlyStopping"
    name = early.get("algorithmName") if isinstance(early, Mapping) else None
    if name != "medianstop":
        work.refuse(f"{path}.algorithmName", f"{name!r}: only medianstop converts (median)")
        return None
    out: dict[str, Any] = {
        "name": "median",
        "resource": "step",
        "minResource": 1,
        "maxResource": MEDIAN_MAX_RESOURCE,
        "minTrials": MEDIAN_MIN_TRIALS,
        "warmupSteps": MEDIAN_START_STEP,
    }
    for index, setting in enumerate(early.get("algorithmSettings") or []):
        where = f"{path}.algorithmSettings[{index}]"
        key = setting.get("name") if isinstance(setting, Mapping) else None
        fields = {"min_trials_required": "minTrials", "start_step": "warmupSteps"}
        if key in fields:
            number = _number(setting.get("value"), f"{where}.value", work, integer=True)
            if number is not None and number < (1 if key == "min_trials_required" else 0):
                work.refuse(f"{where}.value", f"out of range: {number}")
            elif number is not None:
                out[fields[key]] = number
        else:
            work.note(where, f"ignored: {key} (kubetune's median rule has no such setting)")
    work.note(
        path,
        "medianstop is scheduler median: a trial's best value so far is compared with the "
        "median of completed trials' values at the same step (Katib: their running averages); "
        "a step is a report (log lines may carry step=N)",
    )
    return out


def _budget(spec: Mapping[str, Any], work: _Work) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if spec.get("maxTrialCount") is None:
        work.refuse(
            "spec.maxTrialCount",
            "required by kubetune (budget.maxTrials); Katib without it runs until the goal",
        )
    else:
        out["maxTrials"] = _number(spec["maxTrialCount"], "spec.maxTrialCount", work, integer=True)
    parallel = spec.get("parallelTrialCount")
    if parallel is None:
        out["parallelTrials"] = KATIB_PARALLEL_DEFAULT
        work.note("spec.parallelTrialCount", f"unset: Katib's default {KATIB_PARALLEL_DEFAULT}")
    else:
        out["parallelTrials"] = _number(parallel, "spec.parallelTrialCount", work, integer=True)
    if spec.get("maxFailedTrialCount") is not None:
        failed = spec["maxFailedTrialCount"]
        out["maxFailedTrials"] = _number(failed, "spec.maxFailedTrialCount", work, integer=True)
    return out


def _metrics_collector(collector_spec: Any, work: _Work) -> None:
    path = "spec.metricsCollectorSpec"
    spec = collector_spec if isinstance(collector_spec, Mapping) else {}
    kind = (spec.get("collector") or {}).get("kind") or "StdOut"
    if kind == "StdOut":
        work.note(
            path,
            "Katib's StdOut collector found name=value anywhere in a line; kubetune reads "
            "lines made only of name=value pairs (or kubetune_trial.report)",
        )
    elif kind == "Push":
        work.note(
            f"{path}.collector.kind",
            "Push: trials report with kubetune_trial.report(step, name=value) instead of "
            "katib's report_metrics",
        )
    else:
        work.refuse(
            f"{path}.collector.kind",
            f"{kind}: kubetune reads metrics from stdout name=value lines or the SDK's reports",
        )
        return
    source = spec.get("source") or {}
    if (source.get("filter") or {}).get("metricsFormat"):
        work.refuse(
            f"{path}.source.filter.metricsFormat",
            "custom formats are not read: kubetune parses name=value lines only",
        )
    for key in ("fileSystemPath", "httpGet"):
        if source.get(key):
            work.refuse(f"{path}.source.{key}", f"{kind} collectors read no {key}")


def _refused_fields(spec: Mapping[str, Any], work: _Work) -> None:
    if spec.get("nasConfig") is not None:
        work.refuse("spec.nasConfig", "neural architecture search has no kubetune equivalent")
    policy = spec.get("resumePolicy")
    if policy == "Never":
        work.note(
            "spec.resumePolicy",
            "Never: a kubetune experiment whose budget is raised continues all the same",
        )
    elif policy is not None:
        work.refuse(
            "spec.resumePolicy",
            f"{policy}: kubetune keeps an experiment's history in its HPOTrials and continues "
            f"it when the budget is raised; there is no suggestion service to keep",
        )
    known = {
        "objective",
        "parameters",
        "algorithm",
        "earlyStopping",
        "parallelTrialCount",
        "maxTrialCount",
        "maxFailedTrialCount",
        "metricsCollectorSpec",
        "nasConfig",
        "resumePolicy",
        "trialTemplate",
    }
    for key in spec:
        if key not in known:
            work.refuse(f"spec.{key}", "not a Katib v1beta1 field kubetune knows how to convert")


def _trial_template(template: Any, renamed: Mapping[str, str], work: _Work) -> dict[str, Any]:
    path = "spec.trialTemplate"
    if not isinstance(template, Mapping):
        work.refuse(path, "required")
        return {}
    if template.get("configMap") is not None:
        work.refuse(f"{path}.configMap", "a template in a ConfigMap: inline it as trialSpec")
        return {}
    trial_spec = template.get("trialSpec")
    if not isinstance(trial_spec, Mapping):
        work.refuse(f"{path}.trialSpec", "required")
        return {}
    kind = f"{trial_spec.get('apiVersion')}/{trial_spec.get('kind')}"
    if trial_spec.get("kind") == "PyTorchJob":
        work.refuse(
            f"{path}.trialSpec.kind",
            "PyTorchJob: kubetune runs each trial as one pod; distributed trials (workers: N) "
            "do not exist yet",
        )
        return {}
    if kind != "batch/v1/Job":
        work.refuse(f"{path}.trialSpec.kind", f"{kind}: only a batch/v1 Job converts")
        return {}
    job = trial_spec.get("spec") or {}
    pod_template = job.get("template") or {}
    pod = pod_template.get("spec")
    pod_path = f"{path}.trialSpec.spec.template.spec"
    if not isinstance(pod, Mapping) or not isinstance(pod.get("containers"), list):
        work.refuse(f"{pod_path}.containers", "required")
        return {}
    for key in sorted(set(job) - {"template"}):
        work.note(
            f"{path}.trialSpec.spec.{key}",
            "dropped: a Job field (kubetune creates each trial's pod itself, and retries "
            "are its own new attempts)",
        )
    for key in ("retain", "successCondition", "failureCondition", "primaryPodLabels"):
        if template.get(key) is not None:
            work.note(f"{path}.{key}", "dropped: kubetune reads a trial's end from its pod")
    references = _trial_parameters(template.get("trialParameters"), renamed, work)
    pod = _primary_first(dict(pod), template.get("primaryContainerName"), pod_path, work)
    if pod is None:
        return {}
    if pod.get("restartPolicy") not in (None, "Never"):
        work.note(
            f"{pod_path}.restartPolicy",
            f"{pod['restartPolicy']} is Never: kubetune retries a trial as a new attempt",
        )
    pod["restartPolicy"] = "Never"
    pod = _substitute(pod, references, pod_path, work)
    out: dict[str, Any] = {}
    meta = {
        k: v
        for k, v in (pod_template.get("metadata") or {}).items()
        if k in ("labels", "annotations")
    }
    if meta:
        out["metadata"] = meta
    out["spec"] = pod
    return out


def _trial_parameters(
    parameters: Any, renamed: Mapping[str, str], work: _Work
) -> dict[str, str | None]:
    """Trial parameter name -> the kubetune parameter its `reference` names (None for a
    trial parameter refused already: its uses are not refused a second time)."""
    out: dict[str, str | None] = {}
    for index, entry in enumerate(parameters or []):
        path = f"spec.trialTemplate.trialParameters[{index}]"
        name = entry.get("name") if isinstance(entry, Mapping) else None
        reference = entry.get("reference") if isinstance(entry, Mapping) else None
        if not name:
            work.refuse(f"{path}.name", "required")
            continue
        out[name] = None
        if isinstance(reference, str) and reference.startswith("${trialSpec."):
            work.refuse(
                f"{path}.reference",
                f"{reference}: trial metadata has no kubetune placeholder (a trial reads "
                f"KUBETUNE_TRIAL and KUBETUNE_EXPERIMENT from its environment)",
            )
        elif reference not in renamed:
            work.refuse(f"{path}.reference", f"{reference!r} names no parameter")
        else:
            out[name] = renamed[str(reference)]  # a str: only str keys are in `renamed`
    return out


def _primary_first(
    pod: dict[str, Any], primary: Any, path: str, work: _Work
) -> dict[str, Any] | None:
    """The pod spec with the training (primary) container first: kubetune runs containers[0]."""
    containers = pod["containers"]
    names = [c.get("name") if isinstance(c, Mapping) else None for c in containers]
    if primary is None and len(containers) == 1:
        index = 0
    elif primary in names:
        index = names.index(primary)
    else:
        work.refuse(
            "spec.trialTemplate.primaryContainerName",
            f"{primary!r} names none of the containers {names}",
        )
        return None
    if not containers[index].get("command"):
        work.refuse(
            f"{path}.containers[{index}].command",
            "required: kubetune runs the training container's command (the image's "
            "entrypoint is not known here)",
        )
        return None
    if index != 0:
        work.note(f"{path}.containers", f"{primary} moved first: kubetune trains in containers[0]")
        containers = [containers[index], *containers[:index], *containers[index + 1 :]]
    pod["containers"] = containers
    return pod


def _substitute(
    pod: dict[str, Any], references: Mapping[str, str | None], path: str, work: _Work
) -> dict[str, Any]:
    """`${trialParameters.X}` -> `{{params.P}}` where kubetune substitutes (the training
    container's command, args and env values); anywhere else it is refused."""
    allowed = {"containers[0].command", "containers[0].args"}

    def replace(text: str, where: str) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            target = references.get(name)
            if target is None:
                if name not in references:
                    work.refuse(where, f"${{trialParameters.{name}}} names no trial parameter")
                return match.group(0)
            return f"{{{{params.{target}}}}}"

        return TRIAL_PARAMETER.sub(one, text)

    def walk(value: Any, where: str) -> Any:
        if isinstance(value, str):
            if TRIAL_PARAMETER.search(value) is None:
                return value
            relative = where.removeprefix(f"{path}.")
            list_field = re.sub(r"\[\d+\]$", "", relative)
            is_env_value = re.fullmatch(r"containers\[0\]\.env\[\d+\]\.value", relative)
            if list_field not in allowed and not is_env_value:
                work.refuse(
                    where,
                    "kubetune substitutes parameters only in the training container's "
                    "command, args and env values",
                )
                return value
            return replace(value, where)
        if isinstance(value, Mapping):
            return {k: walk(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    return walk(pod, path)


# Where a kubetune path's problem points back to in the Katib document.
_BACK = [
    ("spec.objective.metric", "spec.objective.objectiveMetricName"),
    ("spec.objective.goal", "spec.objective.type"),
    ("spec.objective.target", "spec.objective.goal"),
    ("spec.budget.maxTrials", "spec.maxTrialCount"),
    ("spec.budget.parallelTrials", "spec.parallelTrialCount"),
    ("spec.budget.maxFailedTrials", "spec.maxFailedTrialCount"),
    ("spec.trialTemplate.spec", "spec.trialTemplate.trialSpec.spec.template.spec"),
    ("spec.algorithm", "spec.algorithm"),
    ("spec.scheduler", "spec.earlyStopping"),
    ("spec.parameters", "spec.parameters"),
    ("metadata", "metadata"),
]


_SPACE = {"min": "min", "max": "max", "step": "step", "scale": "distribution", "values": "list"}
_FEASIBLE = re.compile(r"^(spec\.parameters\[\d+\])\.(min|max|step|scale|values)")


def _check_valid(document: Mapping[str, Any]) -> None:
    """What the converted experiment breaks of kubetune's own rules, named in Katib terms."""
    try:
        parse_experiment(document)
    except SpecError as error:
        problems = []
        for path, reason in error.problems:
            katib = next(
                (old + path[len(new) :] for new, old in _BACK if path.startswith(new)), path
            )
            katib = _FEASIBLE.sub(lambda m: f"{m[1]}.feasibleSpace.{_SPACE[m[2]]}", katib)
            problems.append((katib, f"kubetune refuses the converted {path}: {reason}"))
        raise Refused(problems) from None


# ----- reading and writing ------------------------------------------------------------


def load(path: Path) -> Mapping[str, Any]:
    """The one Katib Experiment in a YAML file (with the same limits as experiment files)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise Refused([("", f"cannot read the file: {error.strerror}")]) from None
    except UnicodeDecodeError as error:
        raise Refused([("", f"not UTF-8 text (byte offset {error.start})")]) from None
    try:
        documents = [d for d in load_yaml_documents(text) if d is not None]
    except yaml.YAMLError as error:
        raise Refused([("", f"not valid YAML: {error}".replace("\n", " "))]) from None
    found = [d for d in documents if isinstance(d, Mapping) and d.get("kind") == KATIB_KIND]
    if len(found) != 1:
        raise Refused([("", f"expected exactly one Katib Experiment, found {len(found)}")])
    return found[0]


class _Dumper(yaml.SafeDumper):
    """Quotes y/n and friends: kubectl reads YAML 1.1, where they are booleans."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "'" if value in {"y", "Y", "n", "N", "yes", "no", "on", "off"} else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(conversion: Conversion) -> str:
    """The HPOExperiment YAML, a comment at the top for each lossy mapping."""
    name = conversion.document["metadata"]["name"]
    origin = f" from {conversion.source}" if conversion.source else ""
    lines = [f"# Converted by `kubetune convert katib`{origin} (Katib Experiment {name})."]
    if conversion.notes:
        lines.append("# What differs from the Katib experiment:")
    for path, change in conversion.notes:
        wrapped = textwrap.wrap(f"{path}: {change}", width=96)
        lines.append(f"# - {wrapped[0]}")
        lines += [f"#   {rest}" for rest in wrapped[1:]]
    body = yaml.dump(conversion.document, Dumper=_Dumper, sort_keys=False, width=100)
    return "\n".join(lines) + "\n" + body


def main(path: Path, out: Any, err: Any) -> int:
    """`kubetune convert katib FILE`: the YAML on `out`, or one line per refused field on
    `err` and exit 2 with nothing on `out`."""
    try:
        text = render(convert(load(path), str(path)))
    except Refused as refused:
        for field_path, reason in refused.problems:
            print(f"{path}: {field_path or '(document)'}: {reason}", file=err)
        return 2
    out.write(text)
    return 0
