"""spec.warmStart in local mode: the earlier experiments are the states of experiments NAME
under the same state root as this one (`.kubetune/NAME` beside the YAML, or beside the
`--state-dir` given). Read once, before the experiment's first event, without taking
their locks and without writing to them (an earlier experiment may still be running:
what it has completed so far is read); the mapping is kubetune.warmstart's.
"""

from __future__ import annotations

import json
from pathlib import Path

from kubetune.engine import Engine
from kubetune.events import Event, WarmStarted, from_record
from kubetune.spec import ExperimentSpec
from kubetune.warmstart import ParentExperiment, WarmStartError, completed_trials, warm_start


def read_parent(root: Path, index: int, name: str) -> ParentExperiment:
    """Experiment `name`'s state under `root`; WarmStartError naming the field if none."""
    where = f"spec.warmStart.experiments[{index}]"
    directory = root / name
    events, spec_file = directory / "events.jsonl", directory / "spec.json"
    if not events.is_file() or not spec_file.is_file():
        raise WarmStartError(
            where, f"no experiment {name!r} under {root} (no {events}); run it first"
        )
    try:
        spec = ExperimentSpec.model_validate(json.loads(spec_file.read_text()))
        engine = Engine.replay(spec, name, _history(events))
    except Exception as error:  # a corrupt or foreign state: say which, never guess
        raise WarmStartError(
            where, f"the state of {name!r} in {directory} cannot be read ({error})"
        ) from None
    return ParentExperiment(name, spec.objective, completed_trials(name, engine.trials))


def _history(path: Path) -> list[Event]:
    """The events, read only: a torn last line (its run is writing or crashed) is skipped,
    not truncated as its own run would."""
    lines = path.read_bytes().split(b"\n")
    return [from_record(json.loads(line)) for line in lines[:-1] if line.strip()]


def load_warm_start(spec: ExperimentSpec, state_dir: Path, now: float) -> WarmStarted:
    """Read every earlier experiment of spec.warmStart and map their trials."""
    assert spec.warmStart is not None
    own = state_dir.resolve()
    root = own.parent
    for index, name in enumerate(spec.warmStart.experiments):
        # --state-dir named like an earlier experiment (or a link to it): its own earlier
        # run would be read as that experiment's, its trials under another name.
        if (root / name).resolve() == own:
            raise WarmStartError(
                f"spec.warmStart.experiments[{index}]",
                f"{root / name} is this run's own state directory (--state-dir): an "
                f"experiment cannot start from itself",
            )
    parents = [read_parent(root, i, name) for i, name in enumerate(spec.warmStart.experiments)]
    return warm_start(spec, parents, now)
