"""The `HPOExperiment` spec: one set of pydantic models for local mode, the operator and the CRD.

Field names follow Kubernetes conventions (camelCase in YAML). Every model forbids
unknown fields, so a typo such as `maxTrails` is refused with the field's path instead
of being silently ignored. `load_experiment` turns pydantic's errors into one
`SpecError` whose lines each name a field path (`spec.parameters[1].min`) and a reason.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from kubetune.grid import MAX_GRID_POINTS, grid_size

API_GROUP = "kubetune.dev"
API_VERSION = f"{API_GROUP}/v1alpha1"
KIND = "HPOExperiment"

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# A Kubernetes object name (RFC 1123 subdomain, kept short so trial names derived from it
# stay valid label values).
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
PARAM_REFERENCE = re.compile(r"\{\{\s*params\.([^}\s]*)\s*\}\}")
DURATION_PATTERN = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
# spec.workers: a gang larger than any node pool may hold (capacity.pools' maxNodes, at
# most 1000) could never be placed whole.
MAX_WORKERS = 1000

Scalar = bool | int | float | str


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Goal(StrEnum):
    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"


class Objective(_Model):
    metric: str = Field(pattern=NAME_PATTERN, description="Metric name the trials report.")
    goal: Goal = Field(description="Whether lower or higher metric values are better.")
    target: float | None = Field(
        default=None,
        description="The experiment succeeds (reason TargetReached) as soon as the best "
        "value reaches this: at most it when minimizing, at least it when maximizing.",
    )

    @field_validator("target")
    @classmethod
    def _finite_target(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value}")
        return value

    def reached(self, value: float) -> bool:
        """True when `value` meets `target` (never when there is no target)."""
        if self.target is None:
            return False
        return value <= self.target if self.goal is Goal.MINIMIZE else value >= self.target

    def is_better(self, a: float, b: float) -> bool:
        """True when value `a` is strictly better than `b` under this objective."""
        return a < b if self.goal is Goal.MINIMIZE else a > b

    def sign(self) -> float:
        """Multiplier that turns the objective into a quantity to minimize."""
        return 1.0 if self.goal is Goal.MINIMIZE else -1.0


class Scale(StrEnum):
    LINEAR = "linear"
    LOG = "log"


Condition = dict[str, Scalar | list[Scalar]]


class _ParameterBase(_Model):
    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    when: Condition | None = Field(
        default=None,
        description="Active only when each named earlier parameter has the given value "
        "(or one of the listed values).",
    )


class FloatParameter(_ParameterBase):
    type: Literal["float"]
    min: float
    max: float
    scale: Scale = Scale.LINEAR
    step: float | None = Field(default=None, gt=0, description="Grid spacing (linear scale).")

    @model_validator(mode="after")
    def _check_bounds(self) -> FloatParameter:
        _check_range(self.min, self.max, self.scale)
        if self.step is not None and self.scale is Scale.LOG:
            raise ValueError("step: only allowed with scale linear")
        return self


class IntParameter(_ParameterBase):
    type: Literal["int"]
    min: int
    max: int
    scale: Scale = Scale.LINEAR
    step: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _check_bounds(self) -> IntParameter:
        _check_range(self.min, self.max, self.scale)
        if self.step != 1 and self.scale is Scale.LOG:
            raise ValueError("step: only allowed with scale linear")
        return self


class CategoricalParameter(_ParameterBase):
    type: Literal["categorical"]
    values: list[Scalar] = Field(min_length=1)

    @field_validator("values")
    @classmethod
    def _unique(cls, values: list[Scalar]) -> list[Scalar]:
        # A set, not pairwise comparison: a 60k-value categorical validated in minutes.
        seen: set[tuple[type, Scalar]] = set()
        for value in values:
            if isinstance(value, str) and "\0" in value:
                raise ValueError(f"{value!r} contains a NUL byte (it cannot be passed to a trial)")
            key = (type(value), value)
            if key in seen:
                raise ValueError(f"duplicate value {value!r}")
            seen.add(key)
        return values


def _check_range(low: float, high: float, scale: Scale) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("min: min and max must be finite numbers")
    if low >= high:
        raise ValueError(f"min: must be less than max ({high}), got {low}")
    if scale is Scale.LOG and low <= 0:
        raise ValueError(f"min: must be greater than 0 with scale log, got {low}")


Parameter = Annotated[
    FloatParameter | IntParameter | CategoricalParameter, Field(discriminator="type")
]


class AlgorithmName(StrEnum):
    RANDOM = "random"
    GRID = "grid"
    SOBOL = "sobol"
    TPE = "tpe"
    BAYESIAN = "bayesian"
    CMAES = "cmaes"


class Algorithm(_Model):
    name: AlgorithmName = AlgorithmName.TPE
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    startupTrials: int | None = Field(
        default=None,
        ge=0,
        description="Random trials before the model-based samplers (tpe, bayesian, cmaes) "
        "take over; the sampler's own default when unset (10 finished trials; bayesian "
        "with parallelTrials p > 1: max(10 - p, 2)).",
    )
    gpMaxTrials: int = Field(
        default=200,
        ge=10,
        le=2000,
        description="bayesian only: past this many finished trials the GP sampler, whose "
        "cost grows cubically with trials, hands over to TPE.",
    )


class SchedulerName(StrEnum):
    NONE = "none"
    MEDIAN = "median"
    SHA = "sha"
    ASHA = "asha"
    HYPERBAND = "hyperband"
    PBT = "pbt"


class Scheduler(_Model):
    name: SchedulerName = SchedulerName.NONE
    resource: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="Name of the step unit trials report, e.g. epoch.",
    )
    minResource: int = Field(default=1, ge=1)
    maxResource: int | None = Field(default=None, ge=1)
    reductionFactor: int = Field(default=3, ge=2, le=100)
    minTrials: int = Field(
        default=5, ge=1, description="median only: completed trials before it stops any."
    )
    warmupSteps: int = Field(
        default=0, ge=0, description="median only: steps before a trial may be stopped."
    )
    # Population-based training (schedulers/pbt.py).
    interval: int | None = Field(
        default=None,
        description="pbt only: a member is ranked (and may be replaced) every `interval` "
        "reported steps of `resource`.",
    )
    quantile: float = Field(
        default=0.25,
        description="pbt only: members in the bottom quantile exploit one of the top "
        "quantile; in (0, 0.5].",
    )
    resampleProbability: float = Field(
        default=0.25,
        description="pbt only: chance that explore draws a parameter anew from its prior.",
    )
    perturbationFactors: list[float] = Field(
        default_factory=lambda: [0.8, 1.2],
        max_length=16,
        description="pbt only: explore multiplies a numeric parameter by one of these.",
    )

    @model_validator(mode="after")
    def _check_resources(self) -> Scheduler:
        if self.name is SchedulerName.NONE:
            return self
        if self.name is SchedulerName.PBT:
            # Checked with the rest of the spec (_pbt_spec_errors): every bad field at once.
            return self
        if self.resource is None:
            raise ValueError(f"resource: required by scheduler {self.name.value}")
        if self.maxResource is None:
            raise ValueError(f"maxResource: required by scheduler {self.name.value}")
        if self.minResource >= self.maxResource:
            raise ValueError(
                f"minResource: must be less than maxResource ({self.maxResource}), "
                f"got {self.minResource}"
            )
        needs_rungs = self.name in (
            SchedulerName.SHA,
            SchedulerName.ASHA,
            SchedulerName.HYPERBAND,
        )
        if needs_rungs and self.minResource * self.reductionFactor > self.maxResource:
            raise ValueError(
                f"maxResource: must be at least minResource * reductionFactor "
                f"({self.minResource * self.reductionFactor}) so that there are at least "
                f"two rungs, got {self.maxResource}"
            )
        return self


def _pbt_errors(scheduler: Scheduler) -> Iterator[tuple[str, str]]:
    if scheduler.resource is None:
        yield "resource", "required by scheduler pbt"
    if scheduler.maxResource is None:
        yield "maxResource", "required by scheduler pbt"
    elif scheduler.minResource >= scheduler.maxResource:
        yield "maxResource", f"must be more than minResource ({scheduler.minResource})"
    top = scheduler.maxResource
    if scheduler.interval is None:
        yield "interval", "required by scheduler pbt"
    elif scheduler.interval < 1:
        yield "interval", f"must be at least 1, got {scheduler.interval}"
    elif top is not None and scheduler.interval > top:
        yield "interval", f"must be at most maxResource ({top}), got {scheduler.interval}"
    if not 0 < scheduler.quantile <= 0.5:
        yield "quantile", f"must be in (0, 0.5], got {scheduler.quantile}"
    if not 0 <= scheduler.resampleProbability <= 1:
        yield "resampleProbability", f"must be in [0, 1], got {scheduler.resampleProbability}"
    if not scheduler.perturbationFactors:
        yield "perturbationFactors", "must list at least one factor"
    for index, factor in enumerate(scheduler.perturbationFactors):
        if not (math.isfinite(factor) and factor > 0):
            yield f"perturbationFactors[{index}]", f"must be a positive number, got {factor}"


class Budget(_Model):
    maxTrials: int = Field(ge=1, le=100_000)
    parallelTrials: int = Field(default=1, ge=1, le=10_000)
    maxFailedTrials: int | None = Field(
        default=None, ge=0, description="The experiment fails when more trials fail."
    )
    maxDuration: str | None = Field(
        default=None, description="Wall-clock limit such as 90m or 2h30m."
    )
    maxCostUSD: float | None = Field(default=None, gt=0)

    @field_validator("maxDuration")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    def max_duration_seconds(self) -> float | None:
        return None if self.maxDuration is None else parse_duration(self.maxDuration)


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration of hours, minutes and seconds (`1h30m`, `45s`)."""
    match = DURATION_PATTERN.match(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"{text!r} is not a duration such as 90s, 30m, 2h or 1h30m")
    hours, minutes, seconds = (int(group or 0) for group in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return float(total)


class EnvVar(BaseModel):
    # Pod env entries may use valueFrom; Kubernetes validates those on the cluster.
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(min_length=1)
    value: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if "=" in name or "\0" in name:
            raise ValueError(f"{name!r} cannot be an environment variable name (= or NUL)")
        return name

    @field_validator("value")
    @classmethod
    def _value(cls, value: str | None) -> str | None:
        _no_nul(value or "")
        return value


def _no_nul(text: str) -> str:
    if "\0" in text:
        raise ValueError(f"{text!r} contains a NUL byte (it cannot be passed to a process)")
    return text


class Container(BaseModel):
    # Only the fields kubetune reads are typed; the rest of a container passes through to
    # the Pod untouched, where the API server validates it.
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(min_length=1)
    image: str | None = None
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    workingDir: str | None = None

    @field_validator("command", "args")
    @classmethod
    def _no_nul_bytes(cls, texts: list[str]) -> list[str]:
        for text in texts:
            _no_nul(text)
        return texts


class PodSpec(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    containers: list[Container] = Field(min_length=1)
    restartPolicy: Literal["Never"] = Field(
        default="Never",
        description="kubetune owns retries (a new attempt per pod), so pods never restart.",
    )

    @model_validator(mode="after")
    def _first_container_runs_something(self) -> PodSpec:
        if not self.containers[0].command:
            raise ValueError("containers[0].command: required (kubetune runs it)")
        return self


class TrialTemplate(_Model):
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: PodSpec


class Checkpoints(_Model):
    uri: str = Field(description="file:///dir or s3://bucket/prefix")

    @field_validator("uri")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if value.startswith("file:///") or re.match(
            r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value
        ):
            return value.rstrip("/")
        raise ValueError(f"{value!r} must start with file:/// (an absolute path) or s3://bucket")


class Capacity(_Model):
    nodePool: str = Field(
        pattern=OBJECT_NAME_PATTERN,
        max_length=63,
        description="The node pool (from the operator's node pool configuration) trials run "
        "on: its node selector and tolerations are added to trial pods, and the operator "
        "scales it.",
    )


class WarmStartMode(StrEnum):
    TRANSFER = "transfer"
    REUSE = "reuse"


# SageMaker's WarmStartConfig allows 1-5 parent jobs; more parents add little a sampler
# can use and make the one record that stores their trials bigger (kubetune.warmstart).
MAX_WARM_START_EXPERIMENTS = 5


class WarmStart(_Model):
    experiments: list[Annotated[str, Field(pattern=OBJECT_NAME_PATTERN, max_length=50)]] = Field(
        min_length=1,
        max_length=MAX_WARM_START_EXPERIMENTS,
        description="Earlier experiments whose completed trials this one starts from: "
        "HPOExperiments in the same namespace on a cluster; locally, the state of "
        "experiment NAME under the same state root (.kubetune/NAME beside the YAML). Read "
        "once, when the experiment starts, and kept in its history.",
    )
    mode: WarmStartMode = Field(
        default=WarmStartMode.TRANSFER,
        description="transfer: earlier trials inform the sampler only; reuse: they also "
        "count toward this experiment's best (same data and code). maxTrials counts new "
        "trials in both.",
    )

    @model_validator(mode="after")
    def _unique(self) -> WarmStart:
        names = self.experiments
        for index, name in enumerate(names):
            if name in names[:index]:
                first = names.index(name)
                raise ValueError(
                    f"experiments[{index}]: {name!r} is named twice (also experiments[{first}])"
                )
        return self


class ExperimentSpec(_Model):
    objective: Objective
    parameters: list[Parameter] = Field(min_length=1, max_length=100)
    algorithm: Algorithm = Field(default_factory=Algorithm)
    scheduler: Scheduler = Field(default_factory=Scheduler)
    budget: Budget
    trialTemplate: TrialTemplate
    workers: int = Field(
        default=1,
        ge=1,
        le=MAX_WORKERS,
        description="Pods (or local processes) per trial attempt, one gang: each runs "
        "trialTemplate with WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR "
        "and MASTER_PORT set for torch.distributed; all start, end and resume together.",
    )
    checkpoints: Checkpoints | None = None
    capacity: Capacity | None = Field(
        default=None, description="Where trials run: a node pool that the operator scales."
    )
    warmStart: WarmStart | None = Field(
        default=None,
        description="Start from the completed trials of earlier experiments (issue 17).",
    )

    @model_validator(mode="after")
    def _cross_field(self) -> ExperimentSpec:
        # Errors raised here carry their own path relative to spec; see _cross_field_errors.
        problems = list(_cross_field_errors(self))
        if problems:
            raise ValueError("; ".join(f"{path}: {reason}" for path, reason in problems))
        return self

    def parameter(self, name: str) -> FloatParameter | IntParameter | CategoricalParameter:
        for parameter in self.parameters:
            if parameter.name == name:
                return parameter
        raise KeyError(name)


def _cross_field_errors(spec: ExperimentSpec) -> Iterator[tuple[str, str]]:
    seen: dict[str, FloatParameter | IntParameter | CategoricalParameter] = {}
    grid_ready = spec.algorithm.name is AlgorithmName.GRID
    for index, parameter in enumerate(spec.parameters):
        where = f"parameters[{index}]"
        if parameter.name in seen:
            yield f"{where}.name", f"duplicate parameter name {parameter.name!r}"
            continue
        twin = next((n for n in seen if n.upper() == parameter.name.upper()), None)
        if twin is not None:
            yield (
                f"{where}.name",
                f"{parameter.name!r} and {twin!r} would both be passed as "
                f"KUBETUNE_PARAM_{twin.upper()}: rename one",
            )
        for parent_name, expected in (parameter.when or {}).items():
            parent = seen.get(parent_name)
            if parent is None:
                reason = (
                    f"unknown parameter {parent_name!r} (a condition may only name a "
                    f"parameter listed before this one)"
                )
                yield f"{where}.when.{parent_name}", reason
                continue
            options = expected if isinstance(expected, list) else [expected]
            for option in options:
                if not _value_fits(parent, option):
                    yield (
                        f"{where}.when.{parent_name}",
                        f"{option!r} is not a value of {parent_name}",
                    )
        seen[parameter.name] = parameter
        if (
            spec.algorithm.name is AlgorithmName.GRID
            and isinstance(parameter, FloatParameter)
            and parameter.step is None
        ):
            grid_ready = False
            yield f"{where}.step", "required for float parameters with algorithm grid"

    if spec.scheduler.name is SchedulerName.PBT:
        yield from _pbt_spec_errors(spec)
        if spec.warmStart is not None:
            # Its members come from each other's checkpoints, and its best trial's schedule
            # of parameters is read from this experiment's own trials.
            yield "warmStart", "does not work with scheduler pbt"

    if (
        grid_ready
        and len(seen) == len(spec.parameters)
        and grid_size(spec.parameters) > MAX_GRID_POINTS
    ):
        yield "parameters", f"the grid has more than {MAX_GRID_POINTS} points"

    container = spec.trialTemplate.spec.containers[0]
    texts: list[tuple[str, str]] = [
        (f"trialTemplate.spec.containers[0].command[{i}]", text)
        for i, text in enumerate(container.command)
    ]
    texts += [
        (f"trialTemplate.spec.containers[0].args[{i}]", t) for i, t in enumerate(container.args)
    ]
    texts += [
        (f"trialTemplate.spec.containers[0].env[{i}].value", env.value)
        for i, env in enumerate(container.env)
        if env.value is not None
    ]
    for path, text in texts:
        for name in PARAM_REFERENCE.findall(text):
            if name not in seen:
                yield path, f"{{{{params.{name}}}}} names no parameter"
        # Anything else opening with {{ is a mistyped reference, not text to pass on as is.
        for stray in re.finditer(r"\{\{", PARAM_REFERENCE.sub("", text)):
            fragment = PARAM_REFERENCE.sub("", text)[stray.start() :][:40]
            yield path, f"malformed placeholder {fragment!r} (write {{{{params.NAME}}}})"


def _pbt_spec_errors(spec: ExperimentSpec) -> Iterator[tuple[str, str]]:
    """What population-based training needs beyond its scheduler's own fields."""
    for path, reason in _pbt_errors(spec.scheduler):
        yield f"scheduler.{path}", reason
    population = spec.budget.parallelTrials
    if population < 2:
        yield "budget.parallelTrials", f"pbt's population: at least 2, got {population}"
    if spec.budget.maxTrials < population:
        yield (
            "budget.maxTrials",
            f"must be at least parallelTrials ({population}): the population, and the "
            f"members that exploits make, are trials",
        )
    if spec.checkpoints is None:
        yield "checkpoints", "required by scheduler pbt (members start from others' checkpoints)"
    for index, parameter in enumerate(spec.parameters):
        if parameter.when is not None:
            yield f"parameters[{index}].when", "conditional parameters do not work with pbt"


def _value_fits(
    parameter: FloatParameter | IntParameter | CategoricalParameter, value: Any
) -> bool:
    if isinstance(parameter, CategoricalParameter):
        return any(type(value) is type(v) and value == v for v in parameter.values)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(parameter, IntParameter) and not float(value).is_integer():
        return False
    return parameter.min <= value <= parameter.max


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(pattern=OBJECT_NAME_PATTERN, max_length=50)
    namespace: str | None = None


class Experiment(_Model):
    apiVersion: Literal["kubetune.dev/v1alpha1"]
    kind: Literal["HPOExperiment"]
    metadata: Metadata
    spec: ExperimentSpec
    status: dict[str, Any] | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _not_own_parent(self) -> Experiment:
        warm = self.spec.warmStart
        if warm is not None and self.metadata.name in warm.experiments:
            index = warm.experiments.index(self.metadata.name)
            raise ValueError(
                f"spec.warmStart.experiments[{index}]: {self.metadata.name!r} is this "
                f"experiment itself"
            )
        return self

    @property
    def name(self) -> str:
        return self.metadata.name


class SpecError(ValueError):
    """An invalid experiment: one `path: reason` line per problem."""

    def __init__(self, problems: Sequence[tuple[str, str]], source: str = "") -> None:
        self.problems = list(problems)
        self.source = source
        head = f"invalid experiment{f' in {source}' if source else ''}:"
        super().__init__("\n".join([head, *(f"  {p}: {r}" for p, r in self.problems)]))


def _format_location(location: Sequence[int | str]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in {"float", "int", "categorical"} and path.endswith("]"):
            continue  # pydantic names the union member; the index already points at it
        else:
            path += f".{part}" if path else str(part)
    return path


def problems_from_validation_error(error: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for detail in error.errors(include_url=False):
        path = _format_location(detail["loc"])
        message = detail["msg"].removeprefix("Value error, ")
        if detail["type"] == "extra_forbidden":
            message = "unknown field"
        # Cross-field validators report `sub.path: reason; ...` relative to their model.
        if detail["type"] == "value_error" and re.match(r"^[\w.\[\]]+: ", message):
            for part in message.split("; "):
                sub, _, reason = part.partition(": ")
                problems.append((f"{path}.{sub}" if path else sub, reason))
            continue
        problems.append((path, message))
    return problems


def parse_experiment(document: Mapping[str, Any], source: str = "") -> Experiment:
    """Validate one decoded YAML/JSON document, raising `SpecError` naming every bad field."""
    if not isinstance(document, Mapping):
        raise SpecError([("", "expected a mapping (an HPOExperiment object)")], source)
    try:
        return Experiment.model_validate(document)
    except ValidationError as error:
        raise SpecError(problems_from_validation_error(error), source) from None


# What a YAML document may expand to. Aliases let a few lines stand for an exponential
# tree (an "alias bomb") that exhausts memory when the spec is copied or serialized.
MAX_YAML_NODES = 1_000_000
MAX_YAML_DEPTH = 100
_YAML_BASE: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _YamlLimit(yaml.YAMLError):
    pass


class _StrictLoader(_YAML_BASE):  # type: ignore[misc, valid-type]
    """A safe loader that refuses a key given twice in one mapping (YAML's last would win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue  # merged keys may be overridden; complex keys are refused later
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in first:
                raise _YamlLimit(
                    f"line {line}: duplicate key {key!r} (first given on line {first[key]})"
                )
            first[key] = line
        return super().construct_mapping(node, deep=deep)


def _node_problem(root: yaml.Node) -> str | None:
    """Why a composed document is refused (too deep, too large expanded, recursive), if it is.

    Iterative and memoized per node, so an alias bomb costs the size of its text.
    """
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _node_children(node)
        if done:
            active.discard(key)
            size[key] = 1 + sum(size[id(child)] for child in children)
            height[key] = 1 + max((height[id(child)] for child in children), default=0)
            if height[key] > MAX_YAML_DEPTH:
                return f"nested deeper than {MAX_YAML_DEPTH} levels"
            if size[key] > MAX_YAML_NODES:
                return f"expands to more than {MAX_YAML_NODES} values (aliases repeating aliases?)"
            continue
        if key in size:
            continue
        if key in active:
            return f"line {node.start_mark.line + 1}: an alias refers to a node containing it"
        active.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in size)
    return None


def _node_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def load_yaml_documents(text: str) -> list[Any]:
    """The documents of a YAML text, refusing duplicate keys, alias bombs and deep nesting."""
    loader = _StrictLoader(text)
    documents: list[Any] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            problem = _node_problem(node)
            if problem is not None:
                raise _YamlLimit(problem)
            documents.append(loader.construct_document(node))
    except RecursionError:
        raise _YamlLimit(f"nested deeper than {MAX_YAML_DEPTH} levels") from None
    finally:
        loader.dispose()
    return documents


# Largest experiment file read. A large categorical (60k values) is well under 1 MiB;
# the limit is what stops `/dev/zero` or a log file given by mistake from filling memory.
MAX_FILE_BYTES = 8 * 1024 * 1024


class _NotReadable(Exception):
    pass


def read_bounded(path: Path, limit: int) -> bytes:
    """A regular file's bytes, refusing anything else or anything larger than `limit`.

    Opened without blocking and checked before reading: a FIFO would wait forever for a
    writer, and a device such as /dev/zero or /dev/urandom never ends.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise _NotReadable(f"cannot read file: {error.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise _NotReadable("cannot read file: Is a directory")
        raise _NotReadable(f"not a regular file (a {_file_kind(mode)}); give a YAML file")
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as error:
            raise _NotReadable(f"cannot read file: {error.strerror}") from None
    if len(data) > limit:
        raise _NotReadable(f"larger than {limit // (1024 * 1024)} MiB; is it an experiment?")
    return data


def _file_kind(mode: int) -> str:
    kinds = {
        stat.S_ISFIFO: "FIFO or pipe",
        stat.S_ISCHR: "character device",
        stat.S_ISBLK: "block device",
        stat.S_ISSOCK: "socket",
    }
    return next((name for test, name in kinds.items() if test(mode)), "special file")


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment YAML file."""
    path = Path(path)
    try:
        data = read_bounded(path, MAX_FILE_BYTES)
    except _NotReadable as error:
        raise SpecError([("", str(error))], str(path)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        reason = f"not UTF-8 text (byte {data[error.start]:#04x} at offset {error.start})"
        raise SpecError([("", reason)], str(path)) from None
    try:
        documents = [d for d in load_yaml_documents(text) if d is not None]
    except _YamlLimit as error:
        raise SpecError([("", str(error))], str(path)) from None
    except yaml.YAMLError as error:
        raise SpecError([("", f"not valid YAML: {error}")], str(path)) from None
    experiments = [d for d in documents if isinstance(d, Mapping) and d.get("kind") == KIND]
    if len(experiments) != 1:
        found = f"found {len(experiments)}" if documents else "the file is empty"
        raise SpecError([("", f"expected exactly one {KIND} document, {found}")], str(path))
    experiment = parse_experiment(experiments[0], str(path))
    _check_types_as_kubernetes(experiments[0], str(path))
    return experiment


def _check_types_as_kubernetes(document: Mapping[str, Any], source: str) -> None:
    """Refuse what only lax conversion made valid: `maxTrials: "3"`, `parallelTrials: yes`
    (a YAML 1.1 boolean, taken as 1). kubectl apply refuses these; a local run took them.

    The document is validated again as JSON in strict mode, which converts no types (an
    integer is still accepted as a float), as the API server's schema would.
    """
    try:
        Experiment.model_validate_json(json.dumps(document, default=str), strict=True)
    except ValidationError as error:
        problems = [
            (
                _format_location(detail["loc"]),
                f"{detail['msg'].removeprefix('Value error, ')}, got {json.dumps(detail['input'])}"
                if detail["type"] in _STRICT_TYPE_ERRORS
                else detail["msg"],
            )
            for detail in error.errors(include_url=False)
        ]
        raise SpecError(problems, source) from None


_STRICT_TYPE_ERRORS = frozenset({"int_type", "float_type", "string_type", "bool_type"})
