"""Runs trial attempts as local processes: the first container's command, its env, our vars.

Each attempt runs in its own session (and so its own process group), so stopping it
stops whatever it spawned (data loader workers, say), and so does its own end: a child it
leaves behind would otherwise hold its output open and keep it "running". On Linux a
trial also gets SIGKILL when the runner dies, so a killed runner leaves no trial behind
to report to an endpoint that is gone.

Output is read in chunks as it comes (no line length limit to trip on) and split at
`\\n` and `\\r`; a line longer than `MAX_LINE_BYTES` keeps only its start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import resource
import signal
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from kubetune.engine import LaunchTrial
from kubetune.local.reaper import Reaper
from kubetune.logparse import Line, LineSplitter, for_log, parse_metrics_line
from kubetune.processes import processes_with_env, signal_all, start_trial
from kubetune.spec import ExperimentSpec
from kubetune.trialenv import AttemptContext, local_launch, trial_env

ExitCallback = Callable[[int, int, int, str], None]
LogReportCallback = Callable[[int, int, int, dict[str, float]], bool]

# How long a trial's leftover children get, once it has exited, to end after SIGTERM
# before they are killed; its output is read until then.
LEFTOVER_GRACE_SECONDS = 2.0

# How much of a failed trial's last line its message keeps; its tail keeps no more per
# line (20 lines of 64 KiB per running trial added up to gigabytes over many trials).
MAX_MESSAGE_CHARS = 300

log = logging.getLogger(__name__)

# Set in every trial's environment (trialenv.py): the run's report endpoint is unique to
# the run, and with the trial and attempt, to one attempt.
_RUN_MARKER = "KUBETUNE_ENDPOINT"
_ATTEMPT_MARKERS = (_RUN_MARKER, "KUBETUNE_TRIAL", "KUBETUNE_ATTEMPT")


class _Output(asyncio.SubprocessProtocol):
    def __init__(self, on_data: Callable[[bytes], None]) -> None:
        self.on_data = on_data
        self.exited = asyncio.Event()
        self.closed = asyncio.Event()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.on_data(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.closed.set()

    def process_exited(self) -> None:
        self.exited.set()


@dataclass
class _Running:
    log: IO[bytes] | None  # None once writing it failed (a full disk): output still parsed
    splitter: LineSplitter = field(default_factory=LineSplitter)
    transport: asyncio.SubprocessTransport | None = None
    pid: int = 0
    task: asyncio.Task[None] | None = None
    kill_timer: asyncio.TimerHandle | None = None
    log_lines: int = 0
    # Variables only this attempt's processes have: how its descendants that left its
    # session are found (signalling its process group does not reach them).
    markers: dict[str, str] = field(default_factory=dict)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))


class LocalExecutor:
    def __init__(
        self,
        spec: ExperimentSpec,
        contexts: Callable[[LaunchTrial], AttemptContext],
        workdir: Path,
        logs_dir: Path,
        on_exit: ExitCallback,
        on_log_report: LogReportCallback,
        grace_seconds: float = 10.0,
        open_files: int | None = None,
        rank_env: Callable[[LaunchTrial], dict[str, str]] | None = None,
        log_suffix: str = "",
    ) -> None:
        """`rank_env` and `log_suffix`: one rank's executor of a gang (local/gang.py): its
        torch.distributed variables, and its own log beside rank 0's."""
        self.spec = spec
        self.contexts = contexts
        self.workdir = workdir
        self.logs_dir = logs_dir
        self.on_exit = on_exit
        self.on_log_report = on_log_report
        self.grace_seconds = grace_seconds
        # The open-file limit trials get: kubetune's own before it raised it.
        self.open_files = open_files or resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.running: dict[tuple[int, int], _Running] = {}
        self.reaper: Reaper | None = None
        self.rank_env = rank_env
        self.log_suffix = log_suffix

    def log_path(self, trial: str, attempt: int) -> Path:
        return self.logs_dir / f"{trial}.attempt-{attempt}{self.log_suffix}.log"

    async def launch(self, action: LaunchTrial) -> None:
        container = self.spec.trialTemplate.spec.containers[0]
        context = self.contexts(action)
        env = dict(os.environ)
        # `python` in a trial's command means the interpreter kubetune runs under, so a
        # venv's packages (torch, the SDK) are there without activating it.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["PYTHONUNBUFFERED"] = "1"
        ours = trial_env(self.spec, context)
        if self.rank_env is not None:
            ours.update(self.rank_env(action))
        argv, container_env = local_launch(container, action.params, ours)
        env.update(container_env)
        env.update(ours)
        workdir = trial_workdir(self.workdir, container.workingDir)
        key = (action.number, action.attempt)
        if not workdir.is_dir():
            self.on_exit(*key, 127, f"workingDir {str(workdir)!r} is not a directory")
            return
        if self.reaper is None:
            self.reaper = Reaper()
            self.reaper.mark(_RUN_MARKER, env[_RUN_MARKER])
        running = _Running(_open_log(self.log_path(action.name, action.attempt)))
        running.markers = {name: env[name] for name in _ATTEMPT_MARKERS}
        if self.rank_env is not None:
            # A gang's ranks share the attempt's variables: one's strays are not the others.
            running.markers["RANK"] = env["RANK"]
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _Output(lambda data: self._output(key, running, data)),
                *argv,
                cwd=workdir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=functools.partial(start_trial, self.open_files),
            )
        except (OSError, ValueError) as error:
            _close_log(running)
            reason = error.strerror if isinstance(error, OSError) else str(error)
            self.on_exit(*key, 127, f"cannot start {argv[0]!r}: {reason}")
            return
        running.transport, running.pid = transport, transport.get_pid()
        self.reaper.watch(running.pid)
        self.running[key] = running
        running.task = asyncio.create_task(self._watch(key, running, protocol))

    def _output(self, key: tuple[int, int], running: _Running, data: bytes) -> None:
        self._lines(key, running, running.splitter.feed(data))

    def _lines(self, key: tuple[int, int], running: _Running, lines: list[Line]) -> None:
        if not lines:
            return
        _write_log(running, b"".join(for_log(line) for line in lines))
        step_name = self.spec.scheduler.resource
        for line in lines:
            text = line.data.decode(errors="replace").strip()
            if not text:
                continue
            running.tail.append(text[:MAX_MESSAGE_CHARS])
            parsed = parse_metrics_line(text, step_name, running.log_lines + 1)
            if parsed is not None:
                running.log_lines += 1
                if not self.on_log_report(*key, *parsed):
                    self.terminate(*key)

    async def _watch(self, key: tuple[int, int], running: _Running, protocol: _Output) -> None:
        transport = running.transport
        assert transport is not None
        try:
            await protocol.exited.wait()
            # Whatever it left behind ends with it: a child holding its stdout would keep
            # the output open forever, and one without would outlive kubetune.
            _signal_group(running.pid, signal.SIGTERM)
            strays = await asyncio.to_thread(processes_with_env, running.markers)
            signal_all(strays, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(protocol.closed.wait(), LEFTOVER_GRACE_SECONDS)
            _signal_group(running.pid, signal.SIGKILL)
            strays += await asyncio.to_thread(processes_with_env, running.markers)
            signal_all(strays, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(protocol.closed.wait(), 1.0)
            code = transport.get_returncode()
            assert code is not None
        finally:
            if running.kill_timer is not None:
                running.kill_timer.cancel()  # the group is gone; its id may be reused
            transport.close()
            if self.reaper is not None:
                self.reaper.forget(running.pid)
            self._lines(key, running, running.splitter.close())
            _close_log(running)
            self.running.pop(key, None)
        message = "" if code == 0 else _last_error_line(list(running.tail))
        self.on_exit(*key, code, message)

    def terminate(self, number: int, attempt: int) -> None:
        running = self.running.get((number, attempt))
        if running is None or running.task is None or running.task.done():
            return
        _signal_group(running.pid, signal.SIGTERM)
        if running.kill_timer is None:
            running.kill_timer = asyncio.get_running_loop().call_later(
                self.grace_seconds, _signal_group, running.pid, signal.SIGKILL
            )

    async def shutdown(self) -> None:
        """Stop every attempt and wait for them (each gets the grace period)."""
        for number, attempt in list(self.running):
            self.terminate(number, attempt)
        tasks = [r.task for r in self.running.values() if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=self.grace_seconds + 5)
        self.kill_all()

    def kill_all(self) -> None:
        """SIGKILL every attempt's process group: the last word on kubetune's way out."""
        for running in self.running.values():
            _signal_group(running.pid, signal.SIGKILL)

    def close(self) -> None:
        """After shutdown: let the reaper go."""
        self.kill_all()
        if self.reaper is not None:
            self.reaper.close()
            self.reaper = None


def _open_log(path: Path) -> IO[bytes] | None:
    try:
        return path.open("ab")
    except OSError as error:
        log.warning("cannot write %s (%s): the trial runs without its log", path, error.strerror)
        return None


def _write_log(running: _Running, data: bytes) -> None:
    """Keep a trial's output; a log that cannot be written is given up, not the trial:
    its lines are still read for reports and it still ends as it ends."""
    if running.log is None:
        return
    try:
        running.log.write(data)
        running.log.flush()
    except OSError as error:
        log.warning(
            "cannot write %s (%s): the rest of its output is not kept",
            running.log.name,
            error.strerror,
        )
        _close_log(running)


def _close_log(running: _Running) -> None:
    if running.log is not None:
        with contextlib.suppress(OSError):  # what a full disk did not take is lost anyway
            running.log.close()
        running.log = None


def trial_workdir(base: Path, working_dir: str | None) -> Path:
    """Where a trial runs: the container's workingDir, relative to the experiment's folder."""
    if not working_dir:
        return base
    return base / working_dir  # an absolute workingDir replaces base


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _last_error_line(tail: list[str]) -> str:
    lines = [line for line in tail if line.strip()]
    return lines[-1] if lines else ""
