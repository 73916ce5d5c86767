"""When a trial's late write (answered reports not yet durable) may wait for the write
that carries them anyway.

A late write is due `REPORT_WRITE_SECONDS` after the oldest change it carries. When that
time comes and the trial's attempt is about to reach the step where its report is
written ahead for certain (its target: the rung where the scheduler pauses it, or the
last step), the write waits for it, once, and never longer than the delay again: the
write-ahead carries the late reports (a status is always written whole). An attempt of
20 reports between rungs at a report a second then costs no late write of its own
(bench/scale.py's open loop: about one HPOTrial status write in six was such a late
write, followed seconds later by the rung's). A trial that stalls is written at the
postponed time; what an operator killed meanwhile loses is still only reports that no
decision reads, for twice the delay at most.
"""

from __future__ import annotations

from kubetune.trials import Attempt, TrialPhase, TrialRecord

# The write-ahead is expected a little later than the attempt's pace so far says
# (a report's own round trip), and a late forecast costs only the late write it saves.
FORECAST_SLACK = 1.25
FORECAST_MARGIN_SECONDS = 1.0


def seconds_to_write_ahead(attempt: Attempt, max_resource: int | None, now: float) -> float | None:
    """Seconds until `attempt` reports the step written ahead for certain (its target, or
    the experiment's last step), at the pace it has trained since its launch; None when
    that cannot be told (no such step, no report yet)."""
    end = attempt.target if attempt.target is not None else max_resource
    if end is None or attempt.started_at is None or attempt.last_step is None:
        return None
    trained = attempt.last_step - attempt.trained_from
    elapsed = now - attempt.started_at
    if trained <= 0 or elapsed <= 0:
        return None
    return max(end - attempt.last_step, 0) * elapsed / trained


def postponement(
    trial: TrialRecord, max_resource: int | None, now: float, delay: float
) -> float | None:
    """How much longer `trial`'s late write, due now, may wait for the write-ahead that
    would carry it (at most `delay`); None: write it now."""
    attempt = trial.attempt
    if trial.phase is not TrialPhase.RUNNING or attempt is None or attempt.ended_at is not None:
        return None
    wait = seconds_to_write_ahead(attempt, max_resource, now)
    if wait is None or wait > delay:
        return None
    return min(wait * FORECAST_SLACK + FORECAST_MARGIN_SECONDS, delay)
