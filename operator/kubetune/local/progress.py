"""What `kubetune run` shows while it works.

On a terminal: a live table (trials by phase, best so far, the running trials) with a
line printed above it for each trial that starts or ends. Elsewhere (CI, a pipe): just
those lines, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kubetune.engine import Engine
from kubetune.events import AttemptEnded, ExperimentEnded, TrialLaunched
from kubetune.space import format_value
from kubetune.spec import ExperimentSpec
from kubetune.trials import TrialPhase


class _Console(Console):
    """A console that goes quiet when its reader goes away (`kubetune run | head`, a
    closed terminal) instead of rich's SystemExit(1): the run is what matters, its
    results are in the state directory and -o, and exit code 1 means a failed experiment."""

    def on_broken_pipe(self) -> None:
        self.quiet = True

    def print(self, *objects: object, **options: object) -> None:  # type: ignore[override]
        try:
            super().print(*objects, **options)  # type: ignore[arg-type]
        except OSError:  # EIO from a terminal that is gone
            self.quiet = True


class ProgressView:
    def __init__(self, spec: ExperimentSpec, experiment: str, live: bool | None = None) -> None:
        self.spec = spec
        self.experiment = experiment
        self.console = _Console(file=sys.stdout, highlight=False, soft_wrap=True)
        self.live_enabled = self.console.is_terminal if live is None else live
        self._live: Live | None = None
        self._seen = 0
        self._started = time.monotonic()

    def __enter__(self) -> ProgressView:
        if self.live_enabled:
            self._live = Live(console=self.console, refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(kind, error, trace)
            self._live = None

    def note(self, message: str) -> None:
        self.console.print(message)

    def refresh(self, engine: Engine) -> None:
        for event in engine.history[self._seen :]:
            line = self._describe(engine, event)
            if line:
                self.console.print(line)
        self._seen = len(engine.history)
        if self._live is not None:
            self._live.update(self._panel(engine))

    def _describe(self, engine: Engine, event: object) -> str | None:
        metric = self.spec.objective.metric
        match event:
            case TrialLaunched(number=number, attempt=attempt, resume=resume, at=at):
                trial = engine.trials[number]
                params = " ".join(f"{k}={format_value(v)}" for k, v in trial.params.items())
                how = f"resumed (attempt {attempt})" if resume else "started"
                return f"{_stamp(at)} {trial.name} {how}: {params}"
            case AttemptEnded(number=number, attempt=attempt, at=at):
                trial = engine.trials[number]
                value = "" if trial.value is None else f" {metric}={trial.value:.6g}"
                step = "" if trial.last_step is None else f" at step {trial.last_step}"
                why = f" ({trial.reason})" if trial.reason else ""
                return f"{_stamp(at)} {trial.name} {trial.phase.value.lower()}{step}{value}{why}"
            case ExperimentEnded(succeeded=ok, reason=reason, message=message, at=at):
                outcome = "succeeded" if ok else "failed"
                return f"{_stamp(at)} {self.experiment} {outcome}: {reason} {message}"
        return None

    def _panel(self, engine: Engine) -> Group:
        counts = engine.counts()
        done = sum(counts[p.value] for p in TrialPhase if p.is_final)
        elapsed = time.monotonic() - self._started
        best = engine.best()
        metric = self.spec.objective.metric
        head = Text.assemble(
            (f"{self.experiment}", "bold"),
            f"  {done}/{self.spec.budget.maxTrials} trials done · ",
            " · ".join(f"{n} {p.lower()}" for p, n in counts.items() if n),
            f" · {elapsed:.0f}s",
        )
        best_line = Text(
            "best: —" if best is None else f"best: {best.name} {metric}={best.value:.6g}",
            style="green",
        )
        table = Table(box=None, pad_edge=False)
        for column in ("trial", "attempt", "step", metric, "params"):
            table.add_column(column)
        for trial in engine.running():
            value = "" if trial.value is None else f"{trial.value:.6g}"
            params = " ".join(f"{k}={format_value(v)}" for k, v in trial.params.items())
            table.add_row(
                trial.name,
                str(trial.attempts[-1].number),
                str(trial.last_step or ""),
                value,
                params,
            )
        return Group(head, best_line, table)

    def summary(self, engine: Engine) -> None:
        best = engine.best()
        counts = ", ".join(f"{n} {p.lower()}" for p, n in engine.counts().items() if n)
        self.console.print(f"trials: {counts}")
        if best is not None:
            params = " ".join(f"{k}={format_value(v)}" for k, v in best.params.items())
            self.console.print(
                f"best trial {best.name}: {self.spec.objective.metric}={best.value:.6g} ({params})"
            )


def _stamp(at: float) -> str:
    """When the event happened (its stored time: a resumed run replays old ones)."""
    return time.strftime("%H:%M:%S", time.localtime(at))
