"""`kubetune run`: the local shell around the engine.

One asyncio loop owns the engine. Reports (HTTP or log lines), process exits and
finished suggestions change it; after each change the loop asks the engine what to do,
writes the new events to the state directory (fsynced) and only then carries the
actions out. Killed at any point, a run restarted with the same command replays the
events, marks the attempts that were running as interrupted (they resume from their
checkpoints, not counted as failures) and goes on.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune import observability
from kubetune.engine import (
    Engine,
    EngineError,
    FinishExperiment,
    LaunchTrial,
    SampleTrial,
    StopTrial,
)
from kubetune.events import ExitKind
from kubetune.ingest import Report, ReportServer
from kubetune.local.executor import LocalExecutor
from kubetune.local.progress import ProgressView
from kubetune.local.state import ExperimentState
from kubetune.offloop import SuggestionWorker
from kubetune.spec import Experiment
from kubetune.trialenv import AttemptContext, checkpoint_uri
from kubetune.trials import Decision, Verdict

EXIT_OK = 0
EXIT_EXPERIMENT_FAILED = 1
EXIT_INTERRUPTED = 130


@dataclass
class RunOptions:
    state_dir: Path
    output: Path | None = None
    parallel: int | None = None
    fresh: bool = False
    grace_seconds: float = 10.0
    live: bool | None = None  # None: a live view when stdout is a terminal
    metrics_port: int | None = None  # serve Prometheus /metrics on 127.0.0.1:PORT


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    succeeded: bool | None
    reason: str
    message: str


def default_state_dir(experiment_file: Path, experiment: Experiment) -> Path:
    return experiment_file.resolve().parent / ".kubetune" / experiment.name


class LocalRun:
    def __init__(self, experiment: Experiment, experiment_file: Path, options: RunOptions) -> None:
        spec = experiment.spec
        if options.parallel is not None:
            budget = spec.budget.model_copy(update={"parallelTrials": options.parallel})
            spec = spec.model_copy(update={"budget": budget})
        self.spec = spec
        self.name = experiment.name
        self.options = options
        self.workdir = experiment_file.resolve().parent
        if options.fresh and options.state_dir.exists():
            aside = options.state_dir.with_name(f"{options.state_dir.name}.old-{int(time.time())}")
            shutil.move(options.state_dir, aside)
        self.state = ExperimentState(options.state_dir)
        base = (
            spec.checkpoints.uri
            if spec.checkpoints
            else (options.state_dir / "checkpoints").resolve().as_uri()
        )
        self.checkpoint_base = base
        self.changed = asyncio.Event()
        self.sampling: asyncio.Task[None] | None = None
        self.sdk_reporters: set[tuple[int, int]] = set()
        self.finished: FinishExperiment | None = None
        self.stopping = False

    # ----- engine access, always followed by a durable write ---------------------------

    def _persist(self) -> None:
        self.state.append(self.engine.history)
        observability.track("", self.name, self.engine)  # trial metrics
        self.view.refresh(self.engine)
        self.changed.set()

    async def _on_report(self, report: Report) -> Verdict:
        trial = self.engine.trial_by_name(report.trial)
        self.sdk_reporters.add((trial.number, report.attempt))
        verdict = self.engine.report(
            trial.number, report.attempt, report.step, report.metrics, time.time()
        )
        self._persist()
        return verdict

    def _on_log_report(
        self, number: int, attempt: int, step: int, metrics: dict[str, float]
    ) -> bool:
        if (number, attempt) in self.sdk_reporters:
            return True  # it reports through the SDK; its log lines are just output
        try:
            verdict = self.engine.report(number, attempt, step, metrics, time.time())
        except EngineError:
            return True
        self._persist()
        # A script without the SDK cannot hear a pause or a stop: it is stopped instead.
        return verdict.decision is Decision.CONTINUE

    def _on_exit(self, number: int, attempt: int, code: int, message: str) -> None:
        if self.stopping:
            # Stopped by us on Ctrl-C: the trial did nothing wrong and resumes next run.
            kind, message = ExitKind.INTERRUPTED, "kubetune run stopped"
        else:
            kind = ExitKind.EXITED
        if self.engine.attempt_ended(number, attempt, kind, code, time.time(), message):
            self._persist()

    def _context(self, action: LaunchTrial) -> AttemptContext:
        return AttemptContext(
            experiment=self.name,
            trial=action.name,
            attempt=action.attempt,
            params=action.params,
            resume=action.resume,
            endpoint=self.endpoint,
            token=self.tokens.token_for(action.name),
            checkpoint_uri=checkpoint_uri(self.checkpoint_base, self.name, action.name),
        )

    # ----- the loop ---------------------------------------------------------------------

    async def run(self) -> RunResult:
        history = self.state.open(self.spec)
        self.engine = Engine.replay(self.spec, self.name, history)
        self.view = ProgressView(self.spec, self.name, live=self.options.live)
        now = time.time()
        for trial in list(self.engine.running()):
            attempt = trial.attempts[-1].number
            self.engine.attempt_ended(
                trial.number, attempt, ExitKind.INTERRUPTED, None, now, "kubetune run restarted"
            )
        if self.engine.reopen(now):
            self.view.note(f"the budget of {self.name} was raised: continuing")
        if history:
            self.view.note(
                f"resuming {self.name} from {self.state.directory} ({len(history)} events)"
            )
        port = self.options.metrics_port
        metrics = await observability.serve_local(self.name, lambda: self.engine, port)
        if metrics.url:
            self.view.note(f"Prometheus metrics on {metrics.url}")
        self.tokens = self.state.tokens(self.name)
        server = ReportServer.single(
            self.tokens, self._on_report, lambda: (t.name for t in self.engine.trials), self.name
        )
        self.endpoint = await server.start()
        self.executor = LocalExecutor(
            self.spec,
            self._context,
            self.workdir,
            self.state.logs,
            self._on_exit,
            self._on_log_report,
            self.options.grace_seconds,
        )
        worker = SuggestionWorker()
        interrupted = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, interrupted.set)
        self._persist()
        try:
            with self.view:
                await self._drive(worker, interrupted)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            self.stopping = self.finished is None
            await self.executor.shutdown()
            if self.sampling is not None:
                self.sampling.cancel()
            worker.close()
            await server.stop()
            await metrics.stop()
            self._mark_interrupted()
            self.state.close()
        return self._result(interrupted.is_set())

    async def _drive(self, worker: SuggestionWorker, interrupted: asyncio.Event) -> None:
        while self.finished is None and not interrupted.is_set():
            self.changed.clear()
            actions = self.engine.decide(time.time())
            self._persist()  # write ahead: decisions are durable before they are carried out
            for action in actions:
                await self._carry_out(action, worker)
            if self.finished is not None:
                break
            waiters = [
                asyncio.create_task(self.changed.wait()),
                asyncio.create_task(interrupted.wait()),
            ]
            # A tick keeps maxDuration and the elapsed time honest when nothing happens.
            await asyncio.wait(waiters, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            self.view.refresh(self.engine)

    async def _carry_out(self, action: Any, worker: SuggestionWorker) -> None:
        match action:
            case LaunchTrial():
                await self.executor.launch(action)
            case StopTrial(number=number, attempt=attempt):
                self.executor.terminate(number, attempt)
            case SampleTrial(number=number):
                if self.sampling is None or self.sampling.done():
                    self.sampling = asyncio.create_task(self._sample(number, worker))
            case FinishExperiment():
                self.finished = action

    async def _sample(self, number: int, worker: SuggestionWorker) -> None:
        suggestion = await worker.suggest(self.engine.sampler_request(number))
        self.engine.record_suggestion(number, suggestion)
        self._persist()

    def _mark_interrupted(self) -> None:
        # Attempts still running now were stopped by us: say so, so the next run resumes them.
        now = time.time()
        for trial in list(self.engine.running()):
            attempt = trial.attempts[-1].number
            self.engine.attempt_ended(
                trial.number, attempt, ExitKind.INTERRUPTED, None, now, "kubetune run stopped"
            )
        self.state.append(self.engine.history)

    def _result(self, interrupted: bool) -> RunResult:
        if self.options.output is not None:
            write_results(self.engine, self.options.output)
        ended = self.engine.ended
        if ended is None:
            message = "interrupted; run the same command again to continue where it stopped"
            self.view.note(message)
            return RunResult(EXIT_INTERRUPTED, None, "Interrupted", message)
        self.view.summary(self.engine)
        code = EXIT_OK if ended.succeeded else EXIT_EXPERIMENT_FAILED
        return RunResult(code, ended.succeeded, ended.reason, ended.message)


def results_document(engine: Engine) -> dict[str, Any]:
    best = engine.best()
    return {
        "experiment": engine.experiment,
        "objective": engine.spec.objective.model_dump(mode="json"),
        "phase": _phase(engine),
        "reason": engine.ended.reason if engine.ended else None,
        "best": None
        if best is None
        else {"trial": best.name, "params": dict(best.params), "value": best.value},
        "trials": [
            {
                "name": t.name,
                "params": dict(t.params),
                "state": t.phase.value,
                "value": t.value,
                "resource": t.resource,
                "attempts": len(t.attempts),
                "interruptions": t.interruptions,
                "reason": t.reason,
            }
            for t in engine.trials
        ],
    }


def _phase(engine: Engine) -> str:
    if engine.ended is None:
        return "Running"
    return "Succeeded" if engine.ended.succeeded else "Failed"


def write_results(engine: Engine, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results_document(engine), indent=2) + "\n")
    tmp.replace(path)


def run_experiment(experiment: Experiment, experiment_file: Path, options: RunOptions) -> RunResult:
    return asyncio.run(LocalRun(experiment, experiment_file, options).run())


__all__ = ["LocalRun", "RunOptions", "RunResult", "run_experiment"]
