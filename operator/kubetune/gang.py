"""A distributed trial (spec.workers > 1): one attempt runs as a gang of ranks.

Pure rules both shells use (no I/O). Each rank gets the environment that
`torch.distributed.init_process_group(init_method="env://")` and `torchrun` expect;
`torch.distributed` does the training, kubetune only places, names, watches and
restarts the ranks, all together:

* all ranks start together, and an attempt ends when its last rank has ended;
* a rank that exits non-zero fails the attempt: the others are stopped at once, not left
  waiting in a collective for a peer that is gone;
* a rank lost to something outside the trial (a signal locally; an evicted, preempted or
  deleted pod, a lost node on a cluster) interrupts the whole attempt: it resumes, all
  ranks together, from the last step every rank checkpointed (the SDK's sharded
  checkpoints, kubetune_trial/checkpoint.py);
* rank 0 exiting 0 ends the attempt with rank 0's result: the others get the grace
  period to finish (save their shard) and are then stopped.

Reports: every rank may report; rank 0's values count, and a report of rank > 0 gets the
decision rank 0's report of that step got (`Engine.rank_decision`), so every rank pauses
or stops at the same step. Tokens are per trial: a rank can speak only for its own trial.

On Kubernetes: kubetune.operator.gang (plain pods `<trial>-a<attempt>-r<rank>` and one
headless Service per trial, not an Indexed Job: that module says why), with
`rank_env(..., ranks_per_host=1)` and MASTER_PORT = DEFAULT_MASTER_PORT (each pod has its
own IP).
"""

from __future__ import annotations

from dataclasses import dataclass

# torch.distributed's own default port (torchrun --master-port).
DEFAULT_MASTER_PORT = 29500


def rank_env(
    rank: int, world_size: int, master_addr: str, master_port: int, ranks_per_host: int = 1
) -> dict[str, str]:
    """The torch.distributed variables of one rank. `ranks_per_host`: how many ranks share
    its host (all of them locally; one per pod on a cluster), which sets LOCAL_RANK and
    LOCAL_WORLD_SIZE as torchrun would."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    return {
        "WORLD_SIZE": str(world_size),
        "RANK": str(rank),
        "LOCAL_RANK": str(rank % ranks_per_host),
        "LOCAL_WORLD_SIZE": str(ranks_per_host),
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
    }


@dataclass(frozen=True)
class GangEnd:
    """How an attempt of a gang ended, from its ranks' ends (see `GangTracker`)."""

    exit_code: int
    message: str
    interrupted: bool


@dataclass
class GangTracker:
    """The ends of one attempt's ranks, as they come, and what they mean for the whole.

    `rank_ended` answers which ranks to stop now (the others, after the first failure or
    interruption); `end` is set once every rank has ended.
    """

    world_size: int
    left: set[int]
    outcome: GangEnd | None = None
    stopped_by_shell: bool = False
    rank0_code: int | None = None

    @classmethod
    def start(cls, world_size: int) -> GangTracker:
        return cls(world_size, set(range(world_size)))

    def rank_ended(self, rank: int, code: int, message: str) -> list[int]:
        """Record a rank's end (code < 0: killed by that signal); the ranks to stop now."""
        self.left.discard(rank)
        if rank == 0:
            self.rank0_code = code
        if self.outcome is not None or self.stopped_by_shell:
            return []
        if rank == 0 and code == 0:
            self.outcome = GangEnd(0, "", False)
            return []  # the others finish on their own within the grace period
        if code == 0:
            return []
        # The engine says "exit code N: <message>"; a signal is said here.
        text = f"rank {rank} of {self.world_size}" + (
            f" killed by signal {-code}" if code < 0 else ""
        )
        text += f": {message}" if message else ""
        self.outcome = GangEnd(code, text, interrupted=code < 0)
        return sorted(self.left)

    def stop(self) -> list[int]:
        """The shell stops the attempt (pause, stop, shutdown): every rank still running."""
        self.stopped_by_shell = True
        return sorted(self.left)

    @property
    def end(self) -> GangEnd | None:
        if self.left:
            return None
        if self.outcome is not None:
            return self.outcome
        # Stopped by the shell: rank 0's end stands for the attempt (its code, as a
        # single-process attempt's would).
        return GangEnd(self.rank0_code if self.rank0_code is not None else 0, "", False)
