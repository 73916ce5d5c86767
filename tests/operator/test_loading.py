"""A load reads the stored histories one HPOTrial at a time (operator/loading.py): the
same records accepted and refused, the same events and the same holes as reading them
all at once, legacy experiments included, while holding the records packed, not as
the JSON objects they were read as."""

from __future__ import annotations

import copy
import gc
import json
import random
import tracemalloc
from typing import Any

import pytest

from kubetune.operator import gaps, store
from kubetune.operator.loading import HistoryReader, read_again_as_legacy, replay
from kubetune.trials import TrialPhase
from tests.engine.helpers import Driver, make_spec
from tests.operator.test_pure import stored_histories

SIGNER = store.HistorySigner(b"k" * 32, "team/exp/uid-1")


def body(number: int, history: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"name": f"exp-{number}", "uid": f"u{number}", "resourceVersion": "7"},
        "spec": {"number": number},
        "status": {"phase": "Completed", "node": "n1", "history": history},
    }


def read(histories: list[list[dict[str, Any]]]) -> tuple[HistoryReader, list, list]:
    reader = HistoryReader(SIGNER)
    experiment = reader.add(histories[0])
    trials = [reader.add_trial(body(n, h)) for n, h in enumerate(histories[1:])]
    if reader.needs_legacy_reading:
        reader, experiment = read_again_as_legacy(reader, trials)
    return reader, experiment, trials


def check_same_as_all_at_once(histories: list[list[dict[str, Any]]]) -> HistoryReader:
    whole = copy.deepcopy(histories)
    checked = store.check_histories(whole, SIGNER)
    accepted = {id(r) for h in checked.histories for r in h}
    refused = [r for h in whole for r in h if id(r) not in accepted]
    reader, experiment, trials = read(histories)
    assert reader.legacy == checked.legacy and reader.refused == checked.refused
    assert experiment == checked.histories[0]
    assert [list(t.records) for t in trials] == checked.histories[1:]
    assert list(reader.take_events()) == store.merge_histories(checked.histories)
    assert reader.holes() == gaps.find_holes(checked.histories, refused)
    return reader


def test_signed_histories_read_one_at_a_time_as_all_at_once() -> None:
    histories, _ = stored_histories(SIGNER, trials=4)
    report = next(r for r in histories[2] if r["type"] == "Reported")
    histories[2] = [r for r in histories[2] if r is not report]  # deleted: a hole
    other = next(r for r in histories[3] if r["type"] == "Reported")
    histories[3].append({**other, "metrics": {"loss": -1.0}})  # forged: refused
    histories[3].append(copy.deepcopy(histories[1][0]))  # stored twice: counted once
    reader = check_same_as_all_at_once(histories)
    assert reader.refused == [0, 0, 0, 1, 0] and reader.holes().missing == [(report["seq"],) * 2]


def test_a_legacy_experiment_is_read_again_as_one_and_as_all_at_once() -> None:
    histories, _ = stored_histories(SIGNER, trials=3)
    for history in histories:  # what kubetune v0.1.0 wrote: no MAC, no version
        for record in history:
            record.pop(store.MAC_FIELD)
            record.pop("v", None)
    reader = check_same_as_all_at_once(histories)
    assert reader.legacy and reader.accepted_any and not any(reader.refused[1:])
    # One signed record anywhere, even in the last trial read: not legacy, the rest refused.
    signed, _ = stored_histories(SIGNER, trials=3)
    histories[-1].append(signed[-1][0])
    reader = check_same_as_all_at_once(histories)
    assert not reader.legacy and reader.raw is None


@pytest.mark.parametrize(
    "bad",
    [
        {"seq": 99, "type": "NoSuchEvent", "v": 1},
        {"seq": 98, "type": "Reported", "number": [1], "attempt": {"a": 1}},  # unhashable
    ],
)
def test_a_record_that_cannot_be_read_fails_the_load_once_all_is_read(bad: dict) -> None:
    """Never raised while reading (the load would stop without a word): raised by
    `take_events()` or as its events are read, which the load turns into
    HistoryUnreadable, in signed and legacy experiments alike."""
    for legacy in (False, True):
        histories, _ = stored_histories(SIGNER, trials=2)
        if legacy:
            for record in (r for h in histories for r in h):
                record.pop(store.MAC_FIELD)
                record.pop("v", None)
        unsigned = {k: v for k, v in bad.items() if k != "v"}  # as v0.1.0 wrote them
        histories[1].append(unsigned if legacy else SIGNER.sign(bad))
        reader, _, _ = read(histories)
        with pytest.raises(Exception) as raised:
            list(reader.take_events())
        assert not isinstance(raised.value, AssertionError)


def trained_histories(trials: int, steps: int) -> list[list[dict[str, Any]]]:
    """Histories as the operator files them, each trial reporting `steps` steps."""
    return trained(trials, steps)[1]


def trained(trials: int, steps: int) -> tuple[Driver, list[list[dict[str, Any]]]]:
    """The engine that made them, and `trained_histories`."""
    spec = make_spec(budget={"maxTrials": trials, "parallelTrials": trials})
    driver = Driver(spec)
    driver.decide()
    for number in range(trials):
        for step in range(1, steps + 1):
            driver.report(number, step, 1.0 / step + number)
        driver.exit(number, 0)
    driver.decide()
    return driver, filed(driver)


def filed(driver: Driver) -> list[list[dict[str, Any]]]:
    """The experiment's and each trial's history as the operator files them (signed)."""
    histories: list[list[dict[str, Any]]] = [[] for _ in range(len(driver.engine.trials) + 1)]
    for seq, event in enumerate(driver.engine.history):
        owner = store.trial_number_of(event)
        record = SIGNER.sign({**store.encode(seq, event), gaps.DURABLE_FIELD: seq})
        histories[0 if owner is None else owner + 1].append(record)
    return histories


def test_what_a_load_holds_is_the_packed_records_not_the_bodies_read() -> None:
    histories = trained_histories(trials=100, steps=33)  # bench/scale.py's mean attempt
    text = [json.dumps(body(n, h)) for n, h in enumerate(histories[1:])]  # as the API sends
    tracemalloc.start()
    try:
        reader = HistoryReader(SIGNER)
        reader.add(histories[0])
        before = tracemalloc.get_traced_memory()[0]
        whole = [json.loads(t) for t in text]  # what a load held before: every body
        held_whole = tracemalloc.get_traced_memory()[0] - before
        del whole
        trials = [reader.add_trial(json.loads(t)) for t in text]  # each dropped once read
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(trials) == 100 and {len(t.records) for t in trials} == {len(histories[1])}
    # What stays is each trial's packed records (a sixth of it) and the decoded events
    # the replay reads (most of it); before, the bodies were held besides: 1.5 times this.
    assert held < 0.6 * held_whole, (held, held_whole)


def test_a_rebuilt_engine_decides_as_before_holding_none_of_the_events_replayed() -> None:
    """Memory at a restart: the events replayed are stored already, so once the engine
    is rebuilt neither it nor the reader holds them (bench/scale.py's restart at 5,000
    trials replays about 170,000, and a load held them through its pod reconcile)."""
    driver, histories = trained(trials=6, steps=5)
    reader, _, _ = read(histories)
    replayed = replay(driver.spec, "exp", reader)
    engine, events = replayed.engine, len(driver.engine.history)
    assert replayed.events == events and replayed.next_seq == events and not replayed.made
    assert engine.history.first_held == len(engine.history) == events  # none held
    assert [(t.phase, t.value) for t in engine.trials] == [
        (t.phase, t.value) for t in driver.engine.trials
    ]
    with pytest.raises(AssertionError, match="taken already"):
        reader.take_events()  # the reader let go of its copy


def run_in_waves(trials: int, parallel: int, steps: int) -> tuple[Driver, list[list[dict]]]:
    """Histories as an experiment running `parallel` trials at once files them: each
    trial planned when a slot frees, as bench/scale.py's are."""
    driver = Driver(make_spec(budget={"maxTrials": trials, "parallelTrials": parallel}))
    driver.decide()
    reached: dict[int, int] = {}
    while running := [t.number for t in driver.engine.trials if t.phase is TrialPhase.RUNNING]:
        for number in running:
            step = reached[number] = reached.get(number, 0) + 1
            driver.report(number, step, 1.0 / step + number)
            if step == steps:
                driver.exit(number, 0)
        driver.decide()
    return driver, filed(driver)


def test_a_load_decodes_a_history_only_while_the_replay_is_inside_it() -> None:
    """At a restart the events decoded at once were every event of the experiment (at
    bench/scale.py's restart at 5,000 trials 174,000, about 19 KB a trial), then the
    engine's copy: now a history is decoded when the merge reaches its first record and
    let go after its last, so what a load holds beyond what it keeps is the trials
    running at once, not all of them."""
    driver, histories = run_in_waves(trials=240, parallel=6, steps=33)
    text = [json.dumps(body(n, h)) for n, h in enumerate(histories[1:])]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        every_event = store.merge_histories(histories)  # all decoded at once: the old peak
        all_decoded = tracemalloc.get_traced_memory()[0] - before
        del every_event
        gc.collect()
        tracemalloc.reset_peak()
        reader = HistoryReader(SIGNER)
        reader.add(histories[0])
        trials = [reader.add_trial(json.loads(t)) for t in text]
        engine = replay(driver.spec, "exp", reader).engine
        del reader
        gc.collect()
        kept, peak = tracemalloc.get_traced_memory()  # kept: the packed trials, the engine
    finally:
        tracemalloc.stop()
    assert len(trials) == 240 and [t.value for t in engine.trials] == [
        t.value for t in driver.engine.trials
    ]
    transient = peak - kept
    assert transient < 0.5 * all_decoded, (transient, all_decoded)


def merged_all_at_once(histories: list[list[dict[str, Any]]]) -> list[tuple[int, Any]]:
    """The merge as it was before `store.MergedHistory` streamed: every record decoded,
    the first of each identity kept in the order added, then one stable sort."""
    seen: set[str] = set()
    events = []
    for history in histories:
        for record in history:
            identity = record.get(store.MAC_FIELD) or json.dumps(
                store.canonical(record), sort_keys=True
            )
            if identity not in seen:
                seen.add(identity)
                events.append(store.decode(record))
    return sorted(events, key=store._order)


def test_the_streamed_merge_equals_the_merge_all_at_once_however_stored() -> None:
    """Records out of order in their history, a record stored in two histories (an
    operator that wrote a trial's record to the experiment too, an HPOTrial restored from
    a copy), two records under one number (legacy: nothing signed), histories empty:
    the same events in the same order."""
    _, signed = run_in_waves(trials=30, parallel=4, steps=6)
    legacy = [[{k: v for k, v in r.items() if k != store.MAC_FIELD} for r in h] for h in signed]
    for seed in range(40):
        rng = random.Random(seed)
        histories = copy.deepcopy(signed if seed % 2 else legacy)
        for history in histories:
            if rng.random() < 0.3:
                rng.shuffle(history)
        for _ in range(rng.randint(0, 6)):
            source = rng.choice([h for h in histories if h])
            copied = copy.deepcopy(rng.choice(source))
            if seed % 2 == 0 and copied["type"] == "Reported" and rng.random() < 0.5:
                copied["at"] += 1.0  # legacy: another record under the same number
            if rng.random() < 0.5:
                rng.choice(histories).insert(0, copied)
            else:  # a history of its own, anywhere: merged from its first number on
                histories.insert(rng.randint(0, len(histories)), [copied])
        histories.insert(rng.randint(0, len(histories)), [])
        assert store.merge_histories(histories) == merged_all_at_once(histories), seed
