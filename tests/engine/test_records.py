"""The stored event log: versioned records, tolerant per-field decoding, golden histories.

Golden histories under tests/fixtures/histories/<format>/ were written by the kubetune
of that format (v0.1.0: commit f13db72, run in a git worktree; v1: the first versioned
format) with tests/fixtures/histories/generate.py. They must keep loading, in both
stored forms (local mode's events.jsonl, the operator's status records), and replay to
the decisions they were written with.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from kubetune.engine import Engine
from kubetune.events import (
    EVENT_TYPES,
    FIELD_DECODERS,
    FORMAT_VERSION,
    AttemptEnded,
    ExitKind,
    HistoryFormatError,
    Reported,
    TrialSampled,
    from_record,
    to_record,
)
from kubetune.local.state import ExperimentState, StateError
from kubetune.operator import store
from kubetune.spec import parse_experiment
from kubetune.trials import Decision, Verdict

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "histories"
FORMATS = ["v0.1.0", "v1"]
SCENARIOS = ["asha-random", "median-tpe"]
# generate.py's key and scope: only test records are signed with them.
TEST_TOKEN_KEY = b"kubetune golden history test key"
TEST_SCOPE = "default/golden/00000000-0000-0000-0000-000000000000"


def golden(fmt: str, scenario: str) -> tuple[dict[str, Any], list[dict[str, Any]], list[Any]]:
    base = GOLDEN / fmt / scenario
    expect = json.loads(Path(f"{base}.expect.json").read_text())
    lines = Path(f"{base}.events.jsonl").read_text().splitlines()
    operator = json.loads(Path(f"{base}.operator.json").read_text())
    return expect, [json.loads(line) for line in lines], operator


def outcome(engine: Engine) -> dict[str, Any]:
    best = engine.best()
    return {
        "trials": [
            {"number": t.number, "phase": t.phase.value, "value": t.value} for t in engine.trials
        ],
        "best": None if best is None else best.number,
        "counts": engine.counts(),
        "ended": engine.ended is not None,
    }


def test_golden_fixtures_are_there() -> None:
    for fmt in FORMATS:
        for scenario in SCENARIOS:
            for suffix in ("events.jsonl", "operator.json", "expect.json"):
                assert (GOLDEN / fmt / f"{scenario}.{suffix}").is_file()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_golden_history_replays_to_the_same_outcome(fmt: str, scenario: str) -> None:
    expect, records, _ = golden(fmt, scenario)
    spec = parse_experiment(expect["document"]).spec
    history = [from_record(r) for r in records]
    engine = Engine.replay(spec, expect["experiment"], history)
    assert outcome(engine) == expect["outcome"]
    assert engine.decide(now=1e9) == []  # ended: nothing more to do


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_golden_history_reports_are_decided_again_the_same(fmt: str, scenario: str) -> None:
    """Every stored report, answered again by today's engine rebuilt from the history
    before it, gets the verdict it got when it was written."""
    expect, records, _ = golden(fmt, scenario)
    spec = parse_experiment(expect["document"]).spec
    history = [from_record(r) for r in records]
    reports = [i for i, e in enumerate(history) if isinstance(e, Reported)]
    assert len(reports) > 10
    for index in reports:
        event = history[index]
        engine = Engine.replay(spec, expect["experiment"], history[:index])
        verdict = engine.report(event.number, event.attempt, event.step, event.metrics, event.at)
        assert verdict == event.verdict, (fmt, scenario, index)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_golden_operator_records_load_and_verify(fmt: str, scenario: str) -> None:
    expect, records, operator = golden(fmt, scenario)
    signer = store.HistorySigner(TEST_TOKEN_KEY, TEST_SCOPE)
    checked = store.check_histories([operator], signer)
    assert checked.refused == [0]
    # v0.1.0 wrote no MACs: accepted once, as legacy, and signed on that load.
    assert checked.legacy is (fmt == "v0.1.0")
    assert all(signer.valid(r) for r in checked.histories[0])
    merged = store.merge_histories(checked.histories)
    assert [seq for seq, _ in merged] == list(range(1, len(records) + 1))
    assert [to_record(e) for _, e in merged] == [to_record(from_record(r)) for r in records]
    spec = parse_experiment(expect["document"]).spec
    engine = Engine.replay(spec, expect["experiment"], [e for _, e in merged])
    assert outcome(engine) == expect["outcome"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_golden_local_state_loads(fmt: str, tmp_path: Path) -> None:
    expect, records, _ = golden(fmt, "asha-random")
    shutil.copy(GOLDEN / fmt / "asha-random.events.jsonl", tmp_path / "events.jsonl")
    spec = parse_experiment(expect["document"]).spec
    state = ExperimentState(tmp_path)
    history = state.open(spec)
    state.close()
    assert [to_record(e) for e in history] == [to_record(from_record(r)) for r in records]


# ----- The codec -----------------------------------------------------------------------


def test_records_carry_the_format_version() -> None:
    record = to_record(AttemptEnded(1, 0, ExitKind.EXITED, 0, 5.0))
    assert record["v"] == FORMAT_VERSION == 1
    assert record["type"] == "AttemptEnded"


def test_every_field_of_every_event_has_a_decoder() -> None:
    for cls in EVENT_TYPES.values():
        for item in dataclasses.fields(cls):
            assert item.name in FIELD_DECODERS, (cls.__name__, item.name)


def test_unknown_fields_are_ignored() -> None:
    record = to_record(AttemptEnded(1, 0, ExitKind.EXITED, 0, 5.0, "done"))
    record["added_later"] = {"anything": [1, 2]}
    assert from_record(record) == AttemptEnded(1, 0, ExitKind.EXITED, 0, 5.0, "done")


def test_missing_optional_fields_take_their_defaults() -> None:
    record = {"type": "AttemptEnded", "number": 1, "attempt": 0, "kind": "interrupted", "at": 2}
    assert from_record(record) == AttemptEnded(1, 0, ExitKind.INTERRUPTED, None, 2, "")
    sampled = from_record({"type": "TrialSampled", "v": 1, "number": 3, "params": {"x": 1}})
    assert sampled == TrialSampled(3, {"x": 1}, {}, {})


def test_whole_floats_from_the_api_server_read_as_integers() -> None:
    record = {"type": "TrialPlanned", "number": 2.0, "bracket": 0, "target": 9.0}
    event = from_record(record)
    assert (event.number, event.target) == (2, 9) and isinstance(event.number, int)


@pytest.mark.parametrize(
    ("record", "words"),
    [
        ({"type": "TrialRenamed", "number": 1}, "unknown event type in history: 'TrialRenamed'"),
        ({"number": 1}, "unknown event type in history: None"),
        ({"type": "TrialPlanned", "v": 2, "number": 1, "bracket": 0}, "format version 2, newer"),
        ({"type": "TrialPlanned", "v": "1", "number": 1}, "bad format version '1'"),
        ({"type": "TrialPlanned", "bracket": 0}, "TrialPlanned: field 'number' is missing"),
        ({"type": "TrialPlanned", "number": "one", "bracket": 0}, "field 'number' is unreadable"),
        ({"type": "TrialPlanned", "number": 1.5, "bracket": 0}, "field 'number' is unreadable"),
        (
            {"type": "AttemptEnded", "number": 1, "attempt": 0, "kind": "vanished", "at": 1},
            "field 'kind' is unreadable",
        ),
        (
            {
                "type": "Reported",
                "number": 1,
                "attempt": 0,
                "step": 1,
                "metrics": {},
                "at": 1,
                "verdict": {"reason": "x"},
            },
            "field 'verdict' is unreadable",
        ),
        (["not", "an", "object"], "is not an object"),
    ],
)
def test_unreadable_records_raise_a_clear_error(record: Any, words: str) -> None:
    with pytest.raises(HistoryFormatError) as raised:
        from_record(record)
    assert words in str(raised.value)
    assert isinstance(raised.value, ValueError)  # shells already turn ValueError into one line


def test_nan_and_infinity_survive_the_round_trip() -> None:
    event = Reported(1, 0, 3, {"loss": float("inf")}, Verdict(Decision.CONTINUE), None, 4.0)
    back = from_record(json.loads(json.dumps(to_record(event))))
    assert back.metrics == {"loss": float("inf")}
    nan = from_record(
        json.loads(
            json.dumps(
                to_record(
                    Reported(1, 0, 3, {"loss": float("nan")}, Verdict(Decision.CONTINUE), None, 4.0)
                )
            )
        )
    )
    assert nan.metrics["loss"] != nan.metrics["loss"]


def test_a_record_signed_with_a_later_field_still_verifies_and_loads() -> None:
    """The MAC covers the record as stored, version and all: a record a later minor
    version wrote (one more field) verifies and decodes; a changed version does not
    verify (nobody can relabel a record)."""
    signer = store.HistorySigner(TEST_TOKEN_KEY, TEST_SCOPE)
    record = store.canonical(store.encode(7, AttemptEnded(1, 0, ExitKind.EXITED, 0, 5.0)))
    later = signer.sign({**record, "node": "pool-a-1"})
    assert signer.valid(later)
    assert store.decode(later) == (7, AttemptEnded(1, 0, ExitKind.EXITED, 0, 5))
    relabelled = {**later, "v": 0}
    assert not signer.valid(relabelled)


def test_local_state_names_a_record_from_a_newer_kubetune(tmp_path: Path) -> None:
    expect, records, _ = golden("v1", "asha-random")
    records[5]["v"] = FORMAT_VERSION + 1
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    spec = parse_experiment(expect["document"]).spec
    with pytest.raises(StateError) as raised:
        ExperimentState(tmp_path).open(spec)
    message = str(raised.value)
    assert "events.jsonl:6" in message and "newer than this kubetune reads" in message
    assert "\n" not in message
