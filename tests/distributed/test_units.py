"""spec.workers, the ranks' environment, the gang's end rules, rank > 0 reports, shards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.engine import Engine, RankWaits
from kubetune.gang import GangTracker, rank_env
from kubetune.ingest import BadReport, parse_report
from kubetune.spec import SpecError, parse_experiment
from kubetune.trials import Decision

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "trial_image" / "examples" / "digits-ddp.yaml"


def document(**spec: Any) -> dict[str, Any]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"].update(spec)
    return doc


def test_workers_default_one_and_bad_values_name_the_field() -> None:
    assert parse_experiment(document()).spec.workers == 2
    plain = document()
    del plain["spec"]["workers"]
    assert parse_experiment(plain).spec.workers == 1
    for bad in (0, -1, 1001, 1.5):
        with pytest.raises(SpecError) as error:
            parse_experiment(document(workers=bad))
        assert "spec.workers" in str(error.value), bad


def test_crd_schema_bounds_workers_and_freezes_it() -> None:
    crd = yaml.safe_load((REPO / "crds" / "hpoexperiments.kubetune.dev.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    workers = schema["properties"]["workers"]
    assert (workers["minimum"], workers["maximum"], workers["default"]) == (1, 1000, 1)
    rules = [r["fieldPath"] for r in schema["x-kubernetes-validations"] if "fieldPath" in r]
    assert ".workers" in rules


def test_rank_env_as_torchrun_sets_it() -> None:
    assert rank_env(1, 2, "127.0.0.1", 29511, ranks_per_host=2) == {
        "WORLD_SIZE": "2",
        "RANK": "1",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29511",
    }
    pod = rank_env(3, 4, "exp-0-a1-0.exp-0-a1", 29500)  # one rank per pod
    assert (pod["LOCAL_RANK"], pod["LOCAL_WORLD_SIZE"]) == ("0", "1")
    with pytest.raises(ValueError):
        rank_env(2, 2, "h", 1)


def test_gang_end_rules() -> None:
    failed = GangTracker.start(3)
    assert failed.rank_ended(1, 3, "boom") == [0, 2]  # the others are stopped at once
    assert failed.rank_ended(0, -15, "") == [] and failed.end is None
    failed.rank_ended(2, -15, "")
    assert failed.end is not None
    assert (failed.end.exit_code, failed.end.interrupted) == (3, False)
    assert failed.end.message == "rank 1 of 3: boom"

    lost = GangTracker.start(2)
    assert lost.rank_ended(1, -9, "") == [0]
    lost.rank_ended(0, -15, "")
    assert lost.end is not None and lost.end.interrupted and "signal 9" in lost.end.message

    clean = GangTracker.start(2)
    assert clean.rank_ended(0, 0, "") == []
    clean.rank_ended(1, 1, "connection reset by peer")  # after rank 0 finished: not a failure
    assert clean.end is not None and clean.end.exit_code == 0

    stopped = GangTracker.start(2)
    assert stopped.stop() == [0, 1]
    stopped.rank_ended(1, -15, "")
    stopped.rank_ended(0, -15, "")
    assert stopped.end is not None and not stopped.end.interrupted


def running_engine() -> Engine:
    doc = document()
    doc["spec"]["algorithm"] = {"name": "random", "seed": 1}
    engine = Engine(parse_experiment(doc).spec, "digits-ddp")
    engine.decide(0.0)
    engine.record_suggestion(0, _suggestion(engine))
    engine.decide(1.0)
    assert engine.running()
    return engine


def _suggestion(engine: Engine) -> Any:
    from kubetune.samplers import suggest

    return suggest(*engine.sampler_request(0))


def test_rank_1_gets_rank_0s_decision_and_its_values_are_not_recorded() -> None:
    engine = running_engine()
    with pytest.raises(RankWaits) as waits:
        engine.report(0, 1, 1, {"val_loss": 0.1}, 2.0, rank=1)
    assert waits.value.status == 202
    history = len(engine.history)
    first = engine.report(0, 1, 1, {"val_loss": 2.0}, 3.0)
    assert first.decision is Decision.PAUSE  # asha's first rung
    assert engine.report(0, 1, 1, {"val_loss": 0.1}, 4.0, rank=1) == first
    assert len(engine.history) == history + 1  # rank 0's report only
    assert engine.trials[0].values == {1: 2.0}


def test_the_report_body_carries_the_rank() -> None:
    body = {"trial": "t-0", "attempt": 1, "step": 2, "metrics": {"x": 1.0}}
    assert parse_report(body).rank == 0
    assert parse_report({**body, "rank": 3}).rank == 3
    for bad in (-1, "1", True, 1000):
        with pytest.raises(BadReport, match="rank"):
            parse_report({**body, "rank": bad})


def ranks(monkeypatch: pytest.MonkeyPatch, uri: str, rank: int, world: int = 2) -> None:
    monkeypatch.setenv("KUBETUNE_CHECKPOINT_URI", uri)
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))


def test_shards_resume_from_the_last_step_every_rank_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kubetune_trial as kt

    uri = tmp_path.as_uri()
    for step in (1, 2, 3):
        for rank in (0, 1):
            ranks(monkeypatch, uri, rank)
            kt.save_checkpoint(json.dumps([rank, step]).encode(), step, keep=1)
    ranks(monkeypatch, uri, 0)
    kt.save_checkpoint(b"[0, 4]", 4, keep=1)  # rank 1 never saved step 4
    assert kt.load_checkpoint() == (3, b"[0, 3]")  # not 4: incomplete
    ranks(monkeypatch, uri, 1)
    assert kt.load_checkpoint() == (3, b"[1, 3]")  # each rank its own shard
    # keep=1 kept the newest complete step on both ranks, and rank 0's load dropped 4.
    for rank in (0, 1):
        assert sorted(p.name for p in (tmp_path / f"rank-{rank}").iterdir()) == [
            "step-00000003.ckpt",
            "step-00000003.ckpt.attempt",  # which attempt wrote it
        ]
    assert not (tmp_path / "latest").exists()


def test_a_rank_loading_late_ignores_the_shards_its_peers_saved_in_this_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attempt 1 ended with rank 0 at step 3 and rank 1 at step 2. In attempt 2, rank 1
    loads first and saves step 3 again before rank 0 loads: rank 0 must still resume from
    step 2, as rank 1 did, not from its own step 3 of attempt 1."""
    import kubetune_trial as kt

    uri = tmp_path.as_uri()
    monkeypatch.setenv("KUBETUNE_ATTEMPT", "1")
    for rank, last in ((0, 3), (1, 2)):
        ranks(monkeypatch, uri, rank)
        for step in range(1, last + 1):
            kt.save_checkpoint(json.dumps([rank, step, 1]).encode(), step)
    monkeypatch.setenv("KUBETUNE_ATTEMPT", "2")
    ranks(monkeypatch, uri, 1)
    assert kt.load_checkpoint() == (2, b"[1, 2, 1]")
    kt.save_checkpoint(b"[1, 3, 2]", 3)
    ranks(monkeypatch, uri, 0)
    assert kt.load_checkpoint() == (2, b"[0, 2, 1]")
    assert not (tmp_path / "rank-0" / "step-00000003.ckpt").exists()  # attempt 1's, stale
    kt.save_checkpoint(b"[0, 3, 2]", 3)
    # Loading again later in the attempt keeps what this attempt saved.
    assert kt.load_checkpoint() == (2, b"[0, 2, 1]")
    assert (tmp_path / "rank-0" / "step-00000003.ckpt").read_bytes() == b"[0, 3, 2]"
    monkeypatch.setenv("KUBETUNE_ATTEMPT", "3")
    assert kt.load_checkpoint() == (3, b"[0, 3, 2]")
    # Pruning took each deleted shard's marker with it.
    assert sorted(p.name for p in (tmp_path / "rank-0").iterdir()) == [
        "step-00000002.ckpt",
        "step-00000002.ckpt.attempt",
        "step-00000003.ckpt",
        "step-00000003.ckpt.attempt",
    ]


def test_no_complete_step_means_a_fresh_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kubetune_trial as kt

    ranks(monkeypatch, tmp_path.as_uri(), 0)
    kt.save_checkpoint(b"x", 1)
    assert kt.load_checkpoint() is None
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    kt.save_checkpoint(b"single", 1)  # one worker: the layout of before
    assert (tmp_path / "step-00000001.ckpt").read_bytes() == b"single"


def test_a_rank_asking_for_a_step_rank_0_went_past_continues() -> None:
    """A report no decision reads may be lost with an operator restart (written lazily):
    rank 1 asking for it must not wait for ever while rank 0 is further on."""
    from kubetune.events import Reported

    doc = document()
    doc["spec"]["algorithm"] = {"name": "random", "seed": 1}
    doc["spec"]["scheduler"] = {"name": "none"}
    engine = Engine(parse_experiment(doc).spec, "digits-ddp")
    engine.decide(0.0)
    engine.record_suggestion(0, _suggestion(engine))
    engine.decide(1.0)
    for step in (1, 2, 3):
        engine.report(0, 1, step, {"val_loss": 1.0 / step}, 2.0 + step)
    kept = [e for e in engine.history if not (isinstance(e, Reported) and e.step == 2)]
    rebuilt = Engine.replay(engine.spec, "digits-ddp", kept)
    assert rebuilt.report(0, 1, 2, {"val_loss": 9.0}, 9.0, rank=1).decision is Decision.CONTINUE
    with pytest.raises(RankWaits):
        rebuilt.report(0, 1, 4, {"val_loss": 9.0}, 9.0, rank=1)
