"""The trial SDK: parameters, reports and checkpoints for a kubetune trial.

Importable without any of the operator's dependencies (stdlib only; boto3 only for
s3:// checkpoints). It implements the trial side of docs/trial-protocol.md::

    import kubetune_trial as kt

    lr = float(kt.param("lr", 0.01))
    start = 1
    if kt.trial_info().resume and (ckpt := kt.load_checkpoint()):
        start = restore(ckpt[1]) + 1
    for epoch in range(start, (kt.trial_info().max_resource or 20) + 1):
        ...
        decision = kt.report(epoch, val_loss=loss, val_accuracy=acc)
        if decision == kt.Decision.PAUSE:
            kt.save_checkpoint(snapshot(), epoch)
        if decision != kt.Decision.CONTINUE:
            break

Run by hand (no ``KUBETUNE_ENDPOINT``), ``params()`` is ``{}`` and ``report()`` prints a
``name=value`` line and answers ``continue``, so the same script works outside kubetune.

Environment knobs besides the protocol's: ``KUBETUNE_REPORT_TIMEOUT`` (seconds one report
may take with its retries, default 300), ``KUBETUNE_REPORT_TRIES`` (default 100),
``KUBETUNE_REPORT_BACKOFF`` (first retry delay, default 0.5 s) and
``KUBETUNE_CHECKPOINT_KEEP`` (checkpoints kept, default 2).

Population-based training needs no knowledge of its rules, only this pattern::

    start = 1
    if (ckpt := kt.start_checkpoint()) is not None:  # own, or the pinned parent's
        start = restore(ckpt[1]) + 1  # then apply this trial's kt.params() anew
    for epoch in range(start, kt.trial_info().max_resource + 1):
        train_one_epoch()
        if kt.checkpoint_due(epoch):
            kt.save_checkpoint(snapshot(), epoch)  # before the report
        if kt.report(epoch, val_loss=evaluate()) != kt.Decision.CONTINUE:
            break

A distributed trial (``spec.workers`` > 1; ``RANK`` and ``WORLD_SIZE`` set per rank) uses
the same calls on every rank: ``report`` counts rank 0's values and answers every rank
with the decision of rank 0's report of that step; ``save_checkpoint`` stores the rank's
shard and ``load_checkpoint`` returns its own shard of the newest step every rank saved
(kubetune_trial/shards.py). Either every rank reports::

    decision = kt.report(epoch, val_loss=loss)  # the same answer on every rank

or rank 0 alone reports and passes the decision on::

    answer = [kt.report(epoch, val_loss=loss) if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(answer, src=0)
    decision = kt.Decision(answer[0])
"""

from .checkpoint import (
    PinnedCheckpointMissing,
    checkpoint_due,
    load_checkpoint,
    save_checkpoint,
    start_checkpoint,
)
from .client import Decision, ReportError, RetryPolicy, flush, report
from .env import ParamValue, TrialInfo, param, params, trial_info
from .leave import EXIT_INTERRUPTED, set_checkpointer

__all__ = [
    "EXIT_INTERRUPTED",
    "Decision",
    "ParamValue",
    "PinnedCheckpointMissing",
    "ReportError",
    "RetryPolicy",
    "TrialInfo",
    "checkpoint_due",
    "flush",
    "load_checkpoint",
    "param",
    "params",
    "report",
    "save_checkpoint",
    "set_checkpointer",
    "start_checkpoint",
    "trial_info",
]
