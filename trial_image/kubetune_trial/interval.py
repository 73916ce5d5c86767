"""Population-based training's checkpoint contract, held by the SDK.

Under PBT (``KUBETUNE_CHECKPOINT_INTERVAL`` set) a report at a multiple of the interval
tells kubetune that the checkpoint of that step exists: another member may be started
from it at once. A script that reports such a step without having saved it (it never
checkpoints, or saves after reporting) would get its members replaced by copies that
fail with PinnedCheckpointMissing, one by one; the report is refused here instead, with
the fix in the message.
"""

from __future__ import annotations

from . import env


class CheckpointNotSaved(RuntimeError):
    """A PBT report at an interval step whose checkpoint this process did not save."""


_saved: set[int] = set()


def saved(step: int) -> None:
    """``save_checkpoint`` stored the checkpoint of ``step`` (this rank's shard)."""
    _saved.add(step)


def check_report(step: int) -> None:
    """Raise CheckpointNotSaved when ``step`` needs a checkpoint (a multiple of the
    interval before maxResource: one others may start from) that was not saved."""
    info = env.trial_info()
    interval = info.checkpoint_interval
    if interval is None or step % interval or step in _saved:
        return
    if info.max_resource is not None and step >= info.max_resource:
        return  # no member starts from the last step
    raise CheckpointNotSaved(
        f"report(step={step}) under population-based training without a checkpoint of "
        f"step {step}: other members may start from it. Save it before reporting: "
        f"`if kt.checkpoint_due(step): kt.save_checkpoint(state, step)`"
    )
