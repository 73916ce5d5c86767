"""An exploit decision that a crash stored only in part, on the operator: the history is
filed by trial, so the replaced member's report (its stop) and the replacement's plan
(TrialPlanned, TrialExploited) are two writes. The operator writes the plan first
(operator/controller.py), and the engine holds the decision when the stop was lost:
the member is stopped at its next report, or when its attempt ends, never replaced
twice and never resumed beside its replacement."""

from __future__ import annotations

from kubetune.engine import Engine, LaunchTrial
from kubetune.events import ExitKind, Reported, TrialExploited, TrialPlanned
from kubetune.trials import Decision, TrialPhase
from tests.pbt.test_engine import _start, spec

REASON = "exploited: replaced by exp-2, from exp-0 at step 2"


def decided() -> Engine:
    """Member 1 is replaced at step 2 by exp-2 from exp-0's checkpoint at step 2; the
    history as it was stored, but for the report of member 1 that carries the stop."""
    engine = Engine(spec(population=2, interval=2, max_resource=8), "exp")
    _start(engine, 0.0)
    engine.report(0, 1, 1, {"loss": 0.5}, 1.0)
    engine.report(0, 1, 2, {"loss": 0.4}, 2.0)
    engine.report(1, 1, 1, {"loss": 0.9}, 2.0)
    verdict = engine.report(1, 1, 2, {"loss": 0.8}, 3.0)
    assert (verdict.decision, verdict.reason) == (Decision.STOP, REASON)
    stop, plan, exploit = engine.history[-3:]
    assert isinstance(stop, Reported) and isinstance(plan, TrialPlanned)
    assert isinstance(exploit, TrialExploited)
    return Engine.replay(engine.spec, "exp", [*engine.history[:-3], plan, exploit])


def test_the_member_asking_again_is_stopped_by_the_stored_decision() -> None:
    engine = decided()
    assert engine.trials[1].phase is TrialPhase.RUNNING and engine.trials[1].replaced_by == 2
    verdict = engine.report(1, 1, 2, {"loss": 0.8}, 4.0)  # the SDK retries the report
    assert (verdict.decision, verdict.reason) == (Decision.STOP, REASON)
    assert len(engine.trials) == 3  # no second replacement
    assert not any(isinstance(e, TrialExploited) and e.number > 2 for e in engine.history)
    engine.attempt_ended(1, 1, ExitKind.EXITED, 0, 5.0)
    assert (engine.trials[1].phase, engine.trials[1].reason) == (TrialPhase.STOPPED, REASON)
    launches = [a for a in engine.decide(5.0) if isinstance(a, LaunchTrial)]
    assert [(a.number, a.parent, a.from_step) for a in launches] == [(2, "exp-0", 2)]


def test_a_member_whose_pod_went_with_the_operator_is_not_resumed() -> None:
    engine = decided()
    engine.attempt_ended(1, 1, ExitKind.INTERRUPTED, None, 4.0)
    assert (engine.trials[1].phase, engine.trials[1].reason) == (TrialPhase.STOPPED, REASON)
    assert engine.trials[1].interruptions == 0
    launches = [a for a in engine.decide(4.0) if isinstance(a, LaunchTrial)]
    assert [a.number for a in launches] == [2]
    replayed = Engine.replay(engine.spec, "exp", engine.history)
    assert [(t.phase, t.reason) for t in replayed.trials] == [
        (t.phase, t.reason) for t in engine.trials
    ]
