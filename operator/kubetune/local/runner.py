"""`kubetune run`: the local shell around the engine.

One asyncio loop owns the engine. Reports (HTTP or log lines), process exits and
finished suggestions change it; after each change the loop asks the engine what to do,
writes the new events to the state directory (fsynced) and only then carries the
actions out. Killed at any point, a run restarted with the same command replays the
events, marks the attempts that were running as interrupted (they resume from their
checkpoints, not counted as failures) and goes on.

The state directory is locked (flock) for the whole run: a second run on it is refused.
Log-line reports that no decision rests on are batched (local/batching.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Sequence
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
from kubetune.events import ExitKind, WarmStarted
from kubetune.ingest import Report, ReportServer
from kubetune.local import batching
from kubetune.local.executor import trial_workdir
from kubetune.local.gang import make_executor
from kubetune.local.parents import load_warm_start
from kubetune.local.progress import ProgressView
from kubetune.local.state import ExperimentState, StateError, StateLock, prepare_directory
from kubetune.offloop import SuggestionWorker
from kubetune.processes import raise_open_file_limit
from kubetune.schedulers import pbt
from kubetune.shell.core import (
    LogReport,
    attempt_context,
    decide,
    experiment_phase,
    take_log_report,
)
from kubetune.spec import Experiment, ExperimentSpec, SchedulerName
from kubetune.trialenv import AttemptContext
from kubetune.trials import Verdict
from kubetune.warmstart import WarmStartError, describe, summary

EXIT_OK = 0
EXIT_EXPERIMENT_FAILED = 1
EXIT_INTERRUPTED = 130

# Open files kubetune holds per running trial (its output pipe, its log, a report
# connection, and a spare while it starts), and for itself (event log, lock, sockets,
# the sampler worker's pipes): the open-file limit caps the trials run at once.
FILES_PER_TRIAL = 4
FILES_RESERVED = 64


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


def check_output(path: Path, experiment_file: Path, state_dir: Path) -> None:
    """Refuse an `--output` that could not be written, or would overwrite the experiment
    or the run's state, before any trial runs."""
    if path.is_dir():
        raise StateError(f"--output {path} is a directory; give a file name")
    target = path.resolve()
    if target == experiment_file.resolve():
        raise StateError(f"--output {path} is the experiment file; give another name")
    if target.is_relative_to(state_dir.resolve()):
        raise StateError(f"--output {path} is inside the state directory {state_dir}")
    if path.exists() and not path.is_file():
        return  # a device or a FIFO (/dev/null, /dev/stdout): written into, not replaced
    if not path.parent.is_dir():
        raise StateError(f"--output {path}: the folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise StateError(f"--output {path}: the folder {path.parent} is not writable")


def check_working_dir(spec: ExperimentSpec, workdir: Path) -> None:
    container = spec.trialTemplate.spec.containers[0]
    where = trial_workdir(workdir, container.workingDir)
    if not where.is_dir():
        raise StateError(
            f"spec.trialTemplate.spec.containers[0].workingDir: {str(where)!r} is not a directory"
        )


def unresolved_env(spec: ExperimentSpec) -> list[str]:
    """What of the container's environment a local trial will not have: valueFrom and
    envFrom need the cluster (Secrets, ConfigMaps, the downward API)."""
    container = spec.trialTemplate.spec.containers[0]
    missing = [f"env {e.name!r} (valueFrom)" for e in container.env if e.value is None]
    if (container.model_extra or {}).get("envFrom"):
        missing.append("envFrom")
    return [
        f"spec.trialTemplate.spec.containers[0]: {what} cannot be resolved locally; "
        f"trials run without it"
        for what in missing
    ]


def _lock_state(options: RunOptions) -> StateLock:
    """Lock the state directory (moving it aside first with --fresh); refuse if in use."""
    directory = options.state_dir
    prepare_directory(directory)
    lock = StateLock(directory)
    lock.acquire()
    if options.fresh and any(p.name != "lock" for p in directory.iterdir()):
        aside = _aside_name(directory)
        try:
            directory.rename(aside)  # not shutil.move: onto an existing folder it nests
        except OSError as error:
            lock.release()
            raise StateError(f"cannot move {directory} aside: {error.strerror}") from None
        lock.release()
        prepare_directory(directory)
        lock = StateLock(directory)
        lock.acquire()
    return lock


def _aside_name(directory: Path) -> Path:
    """A free name for the state that --fresh moves aside (two --fresh in one second)."""
    stamp = int(time.time())
    aside = directory.with_name(f"{directory.name}.old-{stamp}")
    number = 1
    while aside.exists():
        number += 1
        aside = directory.with_name(f"{directory.name}.old-{stamp}-{number}")
    return aside


class LocalRun:
    def __init__(self, experiment: Experiment, experiment_file: Path, options: RunOptions) -> None:
        spec = experiment.spec
        parallel = options.parallel or spec.budget.parallelTrials
        self.open_files, limit = raise_open_file_limit()
        fits = max(1, (limit - FILES_RESERVED) // FILES_PER_TRIAL)
        self.limited_note = ""
        if parallel > fits:
            # Started anyway, the trials past the limit would fail to start and be
            # counted as failed trials for kubetune's own lack of files.
            self.limited_note = (
                f"running at most {fits} trials at once, not {parallel}: the open-file "
                f"limit is {limit} (ulimit -n)"
            )
            parallel = fits
        if parallel != spec.budget.parallelTrials:
            budget = spec.budget.model_copy(update={"parallelTrials": parallel})
            spec = spec.model_copy(update={"budget": budget})
        self.spec = spec
        self.name = experiment.name
        self.options = options
        self.workdir = experiment_file.resolve().parent
        # Everything that can be refused is refused before anything is written.
        if options.output is not None:
            check_output(options.output, experiment_file, options.state_dir)
        check_working_dir(spec, self.workdir)
        self.warm_start = _read_warm_start(spec, options, resumed=_has_history(options))
        self.lock = _lock_state(options)
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
        # Log-line reports waiting to be handed to the engine: the latest per attempt.
        self.waiting: dict[tuple[int, int], tuple[int, dict[str, float]]] = {}
        self.flushed_at = time.monotonic()
        # Set when the state could not be written (a full disk): the run stops, as if
        # interrupted, and says why; nothing is carried out that is not on disk.
        self.write_error: StateError | None = None
        self.observer = observability.Observer()  # this run's metrics (no module state)

    # ----- engine access, always followed by a durable write ---------------------------

    def _write(self, sync: bool = True) -> None:
        self._append(sync)
        self.observer.track("", self.name, self.engine)  # trial metrics
        self.view.refresh(self.engine)
        # Every reader has the events on disk now: the engine need not hold them.
        self.engine.history.release(self.state.written)

    def _append(self, sync: bool = True) -> None:
        """Write the new events. A refused write stops the run; it is recorded and the
        loop woken rather than raised, as most writes happen in callbacks."""
        try:
            self.state.append(self.engine.history, sync)
        except StateError as error:
            if self.write_error is None:
                self.write_error = error
                self.stopping = True  # trials stopped now resume next run, not fail
                self.changed.set()

    def _persist(self, sync: bool = True) -> None:
        """Write what changed and wake the loop to decide on it."""
        self._write(sync)
        self.changed.set()

    async def _on_report(self, report: Report) -> Verdict:
        trial = self.engine.trial_by_name(report.trial)
        self.sdk_reporters.add((trial.number, report.attempt))
        verdict = self.engine.report(
            trial.number, report.attempt, report.step, report.metrics, time.time(), report.rank
        )
        self._persist()
        return verdict

    def _on_log_report(
        self, number: int, attempt: int, step: int, metrics: dict[str, float]
    ) -> bool:
        if (number, attempt) in self.sdk_reporters:
            return True  # it reports through the SDK; its log lines are just output
        if not batching.wanted(metrics, self.spec.objective.metric):
            return True
        key = (number, attempt)
        if not batching.report_now(self.engine, number, attempt, step, metrics):
            self.waiting[key] = (step, metrics)
            return True
        self._hand_over(key)
        taken = take_log_report(
            self.engine, self.sdk_reporters, number, attempt, step, metrics, time.time()
        )
        if taken is LogReport.CONTINUE or taken is LogReport.HALT:
            self._persist()
        # The process runs on unless it must pause or stop and cannot hear it (no SDK).
        return taken is not LogReport.HALT

    def _hand_over(self, key: tuple[int, int]) -> None:
        """Give the engine an attempt's waiting report (written, not yet fsynced)."""
        waiting = self.waiting.pop(key, None)
        if waiting is None:
            return
        try:
            self.engine.report(*key, *waiting, time.time())
        except EngineError:
            return
        self._write(sync=False)

    def _flush_waiting(self) -> None:
        for key in list(self.waiting):
            self._hand_over(key)
        self.flushed_at = time.monotonic()
        self._append()  # fsync what was batched

    def _on_exit(
        self, number: int, attempt: int, code: int, message: str, interrupted: bool = False
    ) -> None:
        if self.stopping:
            # Stopped by us on Ctrl-C: the trial did nothing wrong and resumes next run.
            kind, message = ExitKind.INTERRUPTED, "kubetune run stopped"
        else:
            # interrupted: a gang's rank lost to a signal (local/gang.py); it resumes.
            kind = ExitKind.INTERRUPTED if interrupted else ExitKind.EXITED
        self._hand_over((number, attempt))  # its last value is its result
        if self.engine.attempt_ended(number, attempt, kind, code, time.time(), message):
            self._persist()

    def _context(self, action: LaunchTrial) -> AttemptContext:
        return attempt_context(action, self.name, self.endpoint, self.tokens, self.checkpoint_base)

    # ----- the loop ---------------------------------------------------------------------

    async def run(self) -> RunResult:
        try:
            return await self._run()
        finally:
            self.state.close()
            self.lock.release()

    async def _run(self) -> RunResult:
        history = self.state.open(self.spec)
        self.engine = Engine.replay(self.spec, self.name, history)
        if self.engine.needs_warm_start():
            event = self.warm_start or _read_warm_start(self.spec, self.options, resumed=False)
            assert event is not None
            self.engine.record_warm_start(event)
        self.view = ProgressView(self.spec, self.name, live=self.options.live)
        if self.engine.ended is not None and not self.engine.can_grow():
            # Nothing left to do: say how it ended, as the run that ended it did.
            ended = self.engine.ended
            self.view.note(
                f"{self.name} already ended ({ended.reason}) in {self.state.directory}; "
                f"run with --fresh to start over"
            )
            return self._result(False)
        now = time.time()
        for trial in list(self.engine.running()):
            attempt = trial.attempts[-1].number
            self.engine.attempt_ended(
                trial.number, attempt, ExitKind.INTERRUPTED, None, now, "kubetune run restarted"
            )
        if self.engine.reopen(now):
            self.view.note(f"the budget of {self.name} was raised: continuing")
        if self.limited_note:
            self.view.note(self.limited_note)
        for note in unresolved_env(self.spec):
            self.view.note(note)
        if history:
            self.view.note(
                f"resuming {self.name} from {self.state.directory} ({len(history)} events)"
            )
        if self.engine.warm is not None and not history:
            self.view.note(describe(self.engine.warm))
        port = self.options.metrics_port
        metrics = await self.observer.serve_local(self.name, lambda: self.engine, port)
        if metrics.url:
            self.view.note(f"Prometheus metrics on {metrics.url}")
        self.tokens = self.state.tokens(self.name)
        server = ReportServer.single(
            self.tokens,
            self._on_report,
            lambda: (t.name for t in self.engine.trials),
            self.name,
            observer=self.observer,
        )
        self.endpoint = await server.start()
        self.executor = make_executor(
            self.spec,
            self._context,
            self.workdir,
            self.state.logs,
            self._on_exit,
            self._on_log_report,
            self.options.grace_seconds,
            self.open_files,
        )
        worker = SuggestionWorker()
        interrupted = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if interrupted.is_set():
                # Asked again while trials get their grace period: no more waiting.
                self.view.note("stopping now: trials are killed")
                self.executor.kill_all()
            interrupted.set()

        stop_signals = _stop_signals()
        for signum in stop_signals:
            loop.add_signal_handler(signum, on_signal)
        self._write()
        try:
            with self.view:
                await self._drive(worker, interrupted)
        finally:
            self.stopping = self.finished is None
            try:
                await self.executor.shutdown()
                if self.sampling is not None:
                    self.sampling.cancel()
                worker.close()
                await server.stop()
                await metrics.stop()
                self._mark_interrupted()
            finally:
                self.executor.close()
                for signum in stop_signals:
                    loop.remove_signal_handler(signum)
        if self.write_error is not None:
            raise StateError(
                f"{self.write_error}; the run stopped there: make room and run the same "
                f"command again to continue"
            )
        return self._result(interrupted.is_set())

    async def _drive(self, worker: SuggestionWorker, interrupted: asyncio.Event) -> None:
        self.worker = worker
        while self.finished is None and not interrupted.is_set() and not self.write_error:
            self.changed.clear()
            if time.monotonic() - self.flushed_at >= batching.FLUSH_SECONDS:
                self._flush_waiting()
            await decide(self.engine, self, time.time())  # written ahead, then carried out
            if self.write_error is not None:
                break  # not durable: not carried out
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

    # ----- the engine's actions: processes (kubetune.shell.core.ActionPort) ------------

    async def persist(self) -> bool:
        # Not _persist: waking ourselves up here would make the loop spin.
        self._write()
        return self.write_error is None

    async def launch(self, actions: Sequence[LaunchTrial]) -> None:
        for action in actions:
            await self.executor.launch(action)

    async def stop(self, action: StopTrial) -> None:
        self.executor.terminate(action.number, action.attempt)

    def sample(self, action: SampleTrial) -> None:
        if self.sampling is None or self.sampling.done():
            self.sampling = asyncio.create_task(self._sample(action.number, self.worker))

    async def finish(self, action: FinishExperiment) -> None:
        self.finished = action

    async def _sample(self, number: int, worker: SuggestionWorker) -> None:
        suggestion = await worker.suggest(self.engine.sampler_request(number))
        self.engine.record_suggestion(number, suggestion)
        self._persist()

    def _mark_interrupted(self) -> None:
        # Attempts still running now were stopped by us: say so, so the next run resumes them.
        self._flush_waiting()
        now = time.time()
        for trial in list(self.engine.running()):
            attempt = trial.attempts[-1].number
            self.engine.attempt_ended(
                trial.number, attempt, ExitKind.INTERRUPTED, None, now, "kubetune run stopped"
            )
        self._append()

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


def _has_history(options: RunOptions) -> bool:
    events = options.state_dir / "events.jsonl"
    return not options.fresh and events.is_file() and events.stat().st_size > 0


def _read_warm_start(
    spec: ExperimentSpec, options: RunOptions, resumed: bool
) -> WarmStarted | None:
    """spec.warmStart's earlier experiments, read for a new history only (a resumed run
    has them in its own, and never reads them again: they may be gone)."""
    if spec.warmStart is None or resumed:
        return None
    try:
        return load_warm_start(spec, options.state_dir, time.time())
    except WarmStartError as error:
        raise StateError(str(error)) from None


def _stop_signals() -> list[signal.Signals]:
    """The signals that stop a run gracefully (trials get their grace period to save a
    checkpoint). SIGHUP (the terminal closed) among them, unless it is ignored: under
    `nohup` the run must go on."""
    signals = [signal.SIGINT, signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signals.append(signal.SIGHUP)
    return signals


def results_document(engine: Engine) -> dict[str, Any]:
    best = engine.best()
    document = {
        "experiment": engine.experiment,
        "objective": engine.spec.objective.model_dump(mode="json"),
        "phase": experiment_phase(engine),
        "reason": engine.ended.reason if engine.ended else None,
        "warmStart": summary(engine.warm),
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
    if engine.spec.scheduler.name is SchedulerName.PBT:
        pbt.add_lineage(document, engine.trials, None if best is None else best.number)
    return document


def write_results(engine: Engine, path: Path) -> None:
    """Write the results to `path`: a file is replaced whole (never left half written),
    through a symlink if it is one; a device or FIFO is written into, never replaced
    (renaming over /dev/null, as root, would make it a plain file for everyone)."""
    text = json.dumps(results_document(engine), indent=2) + "\n"
    target = path.resolve() if path.is_symlink() else path
    if target.exists() and not target.is_file():
        try:
            with target.open("w") as handle:
                handle.write(text)
        except OSError as error:
            raise StateError(f"cannot write --output {path}: {error.strerror}") from None
        return
    tmp = target.with_name(target.name + ".tmp")
    try:
        tmp.write_text(text)
        tmp.replace(target)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise StateError(f"cannot write --output {path}: {error.strerror}") from None


def run_experiment(experiment: Experiment, experiment_file: Path, options: RunOptions) -> RunResult:
    return asyncio.run(LocalRun(experiment, experiment_file, options).run())


__all__ = ["LocalRun", "RunOptions", "RunResult", "run_experiment"]
