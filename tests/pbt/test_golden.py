"""A PBT history as stored (format version 1, with its TrialExploited records) must keep
reading, and replay to the same lineage and decisions, in every later kubetune."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetune.engine import Engine
from kubetune.events import HistoryFormatError, TrialExploited, from_record, to_record
from kubetune.schedulers.pbt import schedule_document
from kubetune.spec import ExperimentSpec

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_the_stored_pbt_history_replays_to_the_same_lineage() -> None:
    records = [json.loads(line) for line in (FIXTURES / "pbt-v1.events.jsonl").open()]
    expect = json.loads((FIXTURES / "pbt-v1.expect.json").read_text())
    events = [from_record(r) for r in records]
    assert [to_record(e) for e in events] == records  # read back exactly as stored
    spec = ExperimentSpec.model_validate(expect["spec"])
    engine = Engine.replay(spec, "golden", events)
    lineage = [[t.name, t.parent, t.from_step, t.replaced_by, t.phase.value] for t in engine.trials]
    assert lineage == expect["lineage"]
    best = engine.best()
    assert best is not None and best.name == expect["best"]
    assert schedule_document(engine.trials, best.number) == expect["schedule"]
    assert engine.decide(1e9) == []  # it had ended: replay decides nothing new


def test_a_trial_exploited_record_missing_a_field_is_refused_by_name() -> None:
    record = next(
        json.loads(line)
        for line in (FIXTURES / "pbt-v1.events.jsonl").open()
        if '"TrialExploited"' in line
    )
    assert isinstance(from_record(record), TrialExploited)
    del record["from_step"]
    with pytest.raises(HistoryFormatError, match="from_step"):
        from_record(record)
