"""Runs trial attempts as local processes: the first container's command, its env, our vars.

Each attempt runs in its own process group, so stopping it stops whatever it spawned
(data loader workers, say). On Linux a child also gets SIGKILL when the runner dies, so
a killed runner leaves no orphans that would report to an endpoint that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kubetune.engine import LaunchTrial
from kubetune.logparse import parse_metrics_line
from kubetune.processes import die_with_parent
from kubetune.spec import ExperimentSpec
from kubetune.trialenv import AttemptContext, rendered_command, rendered_env, trial_env

ExitCallback = Callable[[int, int, int, str], None]
LogReportCallback = Callable[[int, int, int, dict[str, float]], bool]


@dataclass
class _Running:
    process: asyncio.subprocess.Process
    task: asyncio.Task[None] | None = None
    log_lines: int = 0
    tail: list[str] = field(default_factory=list)


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
    ) -> None:
        self.spec = spec
        self.contexts = contexts
        self.workdir = workdir
        self.logs_dir = logs_dir
        self.on_exit = on_exit
        self.on_log_report = on_log_report
        self.grace_seconds = grace_seconds
        self.running: dict[tuple[int, int], _Running] = {}

    def log_path(self, trial: str, attempt: int) -> Path:
        return self.logs_dir / f"{trial}.attempt-{attempt}.log"

    async def launch(self, action: LaunchTrial) -> None:
        container = self.spec.trialTemplate.spec.containers[0]
        context = self.contexts(action)
        env = dict(os.environ)
        # `python` in a trial's command means the interpreter kubetune runs under, so a
        # venv's packages (torch, the SDK) are there without activating it.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["PYTHONUNBUFFERED"] = "1"
        env.update(rendered_env(container, action.params))
        env.update(trial_env(self.spec, context))
        workdir = self.workdir
        if container.workingDir and not Path(container.workingDir).is_absolute():
            workdir = workdir / container.workingDir
        argv = rendered_command(container, action.params)
        key = (action.number, action.attempt)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=workdir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
                limit=1 << 20,
            )
        except OSError as error:
            self.on_exit(*key, 127, f"cannot start {argv[0]!r}: {error.strerror}")
            return
        running = _Running(process)
        self.running[key] = running
        running.task = asyncio.create_task(self._watch(key, action.name, running))

    async def _watch(self, key: tuple[int, int], trial: str, running: _Running) -> None:
        process = running.process
        assert process.stdout is not None
        resource = self.spec.scheduler.resource
        with self.log_path(trial, key[1]).open("ab") as log:
            async for raw in process.stdout:
                log.write(raw)
                log.flush()
                line = raw.decode(errors="replace").rstrip()
                running.tail = [*running.tail[-19:], line]
                parsed = parse_metrics_line(line, resource, running.log_lines + 1)
                if parsed is not None:
                    running.log_lines += 1
                    if not self.on_log_report(*key, *parsed):
                        self.terminate(*key)
        code = await process.wait()
        self.running.pop(key, None)
        message = "" if code == 0 else _last_error_line(running.tail)
        self.on_exit(*key, code, message)

    def terminate(self, number: int, attempt: int) -> None:
        running = self.running.get((number, attempt))
        if running is None or running.process.returncode is not None:
            return
        _signal_group(running.process.pid, signal.SIGTERM)
        asyncio.get_running_loop().call_later(
            self.grace_seconds, _signal_group, running.process.pid, signal.SIGKILL
        )

    async def shutdown(self) -> None:
        """Stop every attempt and wait for them (each gets the grace period)."""
        for number, attempt in list(self.running):
            self.terminate(number, attempt)
        tasks = [r.task for r in self.running.values() if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=self.grace_seconds + 5)


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _last_error_line(tail: list[str]) -> str:
    lines = [line for line in tail if line.strip()]
    return lines[-1][:300] if lines else ""
