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
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .client import Decision, ReportError, RetryPolicy, report
from .env import ParamValue, TrialInfo, param, params, trial_info

__all__ = [
    "Decision",
    "ParamValue",
    "ReportError",
    "RetryPolicy",
    "TrialInfo",
    "load_checkpoint",
    "param",
    "params",
    "report",
    "save_checkpoint",
    "trial_info",
]
