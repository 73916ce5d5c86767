"""Schedulers decide, from the reports, which trials continue, pause, stop or resume.

Each is a pure policy over the engine's trial records (`kubetune.trials`), in the spirit
of Optuna's pruners but built for a cluster: rung-based schedulers *pause* a trial at a
rung (it checkpoints and frees its GPU) and *promote* it later (it resumes from the
checkpoint), rather than keeping it alive while its rung fills.
"""

from kubetune.schedulers.base import SchedulerPolicy, rung_resources
from kubetune.schedulers.factory import make_scheduler

__all__ = ["SchedulerPolicy", "make_scheduler", "rung_resources"]
