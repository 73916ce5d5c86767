"""Local distributed trials (spec.workers > 1): each attempt is a gang of local processes.

Rank r runs through its own `LocalExecutor` (its own process group, log
`<trial>.attempt-<n>.rank-<r>.log`; rank 0 keeps the usual log name and alone has its
`name=value` lines read as reports), with MASTER_ADDR=127.0.0.1 and a port free when the
attempt starts. What the ends of its ranks mean for the attempt is `kubetune.gang`'s
`GangTracker`; here is only the I/O: stopping the other ranks at once after a failure or
an interruption (a rank killed by a signal kubetune did not send), and after the grace
period once rank 0 has exited 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from kubetune.engine import LaunchTrial
from kubetune.gang import GangTracker, rank_env
from kubetune.local.executor import LocalExecutor, LogReportCallback
from kubetune.ports import free_port
from kubetune.spec import ExperimentSpec
from kubetune.trialenv import AttemptContext

# (number, attempt, exit code, message, interrupted): an interrupted attempt resumes.
GangExitCallback = Callable[[int, int, int, str, bool], None]
LOOPBACK = "127.0.0.1"


class GangExecutor:
    """`LocalExecutor`'s interface for a gang of `spec.workers` processes per attempt."""

    def __init__(
        self,
        spec: ExperimentSpec,
        contexts: Callable[[LaunchTrial], AttemptContext],
        workdir: Path,
        logs_dir: Path,
        on_exit: GangExitCallback,
        on_log_report: LogReportCallback,
        grace_seconds: float = 10.0,
        open_files: int | None = None,
    ) -> None:
        self.world_size = spec.workers
        self.on_exit = on_exit
        self.on_log_report = on_log_report
        self.grace_seconds = grace_seconds
        self.gangs: dict[tuple[int, int], GangTracker] = {}
        self.ports: dict[tuple[int, int], int] = {}
        self.ranks = [
            LocalExecutor(
                spec,
                contexts,
                workdir,
                logs_dir,
                self._exit_callback(rank),
                self._log_callback(rank),
                grace_seconds,
                open_files,
                rank_env=self._env_callback(rank),
                log_suffix="" if rank == 0 else f".rank-{rank}",
            )
            for rank in range(self.world_size)
        ]

    def _env_callback(self, rank: int) -> Callable[[LaunchTrial], dict[str, str]]:
        def env(action: LaunchTrial) -> dict[str, str]:
            port = self.ports[(action.number, action.attempt)]
            return rank_env(rank, self.world_size, LOOPBACK, port, self.world_size)

        return env

    def _log_callback(self, rank: int) -> LogReportCallback:
        def report(number: int, attempt: int, step: int, metrics: dict[str, float]) -> bool:
            if rank != 0:
                return True  # rank 0's values count
            if not self.on_log_report(number, attempt, step, metrics):
                self.terminate(number, attempt)  # a pause or stop it cannot hear: all ranks
            return True

        return report

    def _exit_callback(self, rank: int) -> Callable[[int, int, int, str], None]:
        def ended(number: int, attempt: int, code: int, message: str) -> None:
            self._rank_ended(rank, number, attempt, code, message)

        return ended

    @property
    def running(self) -> dict[tuple[int, int], GangTracker]:
        return self.gangs

    def log_path(self, trial: str, attempt: int) -> Path:
        return self.ranks[0].log_path(trial, attempt)

    async def launch(self, action: LaunchTrial) -> None:
        key = (action.number, action.attempt)
        gang = self.gangs[key] = GangTracker.start(self.world_size)
        # rank 0's torch.distributed store binds it
        self.ports[key] = free_port(LOOPBACK, avoid=set(self.ports.values()))
        for rank, executor in enumerate(self.ranks):
            if gang.outcome is not None or gang.stopped_by_shell:
                # A rank could not start, or the attempt was stopped meanwhile: the
                # ranks not started have nothing to end.
                gang.left -= set(range(rank, self.world_size))
                self._settle(key)
                return
            await executor.launch(action)

    def _rank_ended(self, rank: int, number: int, attempt: int, code: int, message: str) -> None:
        key = (number, attempt)
        gang = self.gangs.get(key)
        if gang is None:
            return
        for other in gang.rank_ended(rank, code, message):
            self._stop_rank(other, key)
        if rank == 0 and code == 0 and gang.left:
            # Rank 0 is done: the others get the grace period to save their shards.
            asyncio.get_running_loop().call_later(self.grace_seconds, self._stop_all, key)
        self._settle(key)

    def _settle(self, key: tuple[int, int]) -> None:
        """Tell the shell once every rank has ended."""
        gang = self.gangs.get(key)
        end = None if gang is None else gang.end
        if end is None:
            return
        del self.gangs[key]
        self.ports.pop(key, None)
        self.on_exit(*key, end.exit_code, end.message, end.interrupted)

    def _stop_rank(self, rank: int, key: tuple[int, int]) -> None:
        if key in self.ranks[rank].running:
            self.ranks[rank].terminate(*key)

    def _stop_all(self, key: tuple[int, int]) -> None:
        gang = self.gangs.get(key)
        if gang is None:
            return
        for rank in gang.stop():
            self._stop_rank(rank, key)

    def terminate(self, number: int, attempt: int) -> None:
        self._stop_all((number, attempt))

    async def shutdown(self) -> None:
        for key in list(self.gangs):
            self.gangs[key].stop()
        await asyncio.gather(*(executor.shutdown() for executor in self.ranks))

    def kill_all(self) -> None:
        for executor in self.ranks:
            executor.kill_all()

    def close(self) -> None:
        for executor in self.ranks:
            executor.close()


def make_executor(
    spec: ExperimentSpec,
    contexts: Callable[[LaunchTrial], AttemptContext],
    workdir: Path,
    logs_dir: Path,
    on_exit: GangExitCallback,
    on_log_report: LogReportCallback,
    grace_seconds: float = 10.0,
    open_files: int | None = None,
) -> LocalExecutor | GangExecutor:
    """One process per attempt, or a gang of spec.workers."""
    if spec.workers > 1:
        return GangExecutor(
            spec, contexts, workdir, logs_dir, on_exit, on_log_report, grace_seconds, open_files
        )

    def single(number: int, attempt: int, code: int, message: str) -> None:
        on_exit(number, attempt, code, message, False)

    return LocalExecutor(
        spec, contexts, workdir, logs_dir, single, on_log_report, grace_seconds, open_files
    )
