"""Rung arithmetic and Hyperband's brackets, against values worked out by hand."""

from __future__ import annotations

import pytest

from kubetune.schedulers import make_scheduler, rung_resources
from kubetune.schedulers.sha import Bracket, SuccessiveHalving, hyperband_brackets

from .helpers import make_spec


@pytest.mark.parametrize(
    ("low", "high", "eta", "expected"),
    [
        # log3(27) = 3: r·η^k for k < 3, then R itself.
        (1, 27, 3, [1, 3, 9, 27]),
        # log3(10) = 2.09 -> 2: 1, 3, then R; 9 is dropped rather than sit next to 10.
        (1, 10, 3, [1, 3, 10]),
        # log2(16/2) = 3: 2, 4, 8, 16.
        (2, 16, 2, [2, 4, 8, 16]),
        # exactly two rungs: log3(3) = 1.
        (1, 3, 3, [1, 3]),
        # log3(26) = 2.97 -> 2: 1, 3, 26 (the float log must not round 2.97 up).
        (1, 26, 3, [1, 3, 26]),
        # log3(243) is 4.999999... in floating point; it must count as 5.
        (1, 243, 3, [1, 3, 9, 27, 81, 243]),
        # log4(100/5) = 2.16 -> 2: 5, 20, 100.
        (5, 100, 4, [5, 20, 100]),
        # log10(1000) = 2.9999999999999996 in floating point: still 3.
        (1, 1000, 10, [1, 10, 100, 1000]),
    ],
)
def test_rung_resources(low: int, high: int, eta: int, expected: list[int]) -> None:
    assert rung_resources(low, high, eta) == expected


def test_hyperband_brackets_for_1_27_3_with_50_trials() -> None:
    # K = 3 (rungs 1, 3, 9, 27); bracket s has ⌈(K+1)/(s+1)·η^s⌉ trials at rung K-s:
    #   s=3: ⌈4/4·27⌉ = 27 @ rung 0 (r=1)   trials  0..26
    #   s=2: ⌈4/3·9⌉  = 12 @ rung 1 (r=3)   trials 27..38
    #   s=1: ⌈4/2·3⌉  =  6 @ rung 2 (r=9)   trials 39..44
    #   s=0: ⌈4/1·1⌉  =  4 @ rung 3 (r=27)  trials 45..48
    # 49 trials so far; the cycle starts again and is truncated at 50: 1 @ rung 0.
    spec = make_spec(
        scheduler={
            "name": "hyperband",
            "resource": "epoch",
            "minResource": 1,
            "maxResource": 27,
            "reductionFactor": 3,
        },
        budget={"maxTrials": 50},
    )
    policy = make_scheduler(spec)
    assert isinstance(policy, SuccessiveHalving)
    assert policy.rungs == [1, 3, 9, 27]
    assert policy.brackets == [
        Bracket(0, 27, 0, 3),
        Bracket(27, 12, 1, 3),
        Bracket(39, 6, 2, 3),
        Bracket(45, 4, 3, 3),
        Bracket(49, 1, 0, 3),
    ]
    first_resource = {0: 1, 26: 1, 27: 3, 38: 3, 39: 9, 44: 9, 45: 27, 48: 27, 49: 1}
    for number, resource in first_resource.items():
        assert policy.initial_target(number) == resource, number
    assert [policy.bracket(n) for n in (0, 26, 27, 38, 39, 44, 45, 48, 49)] == [
        0, 0, 1, 1, 2, 2, 3, 3, 4,
    ]  # fmt: skip
    # Survivors per rung (⌊n/η^i⌋), Li et al. table 1 for R=27, η=3:
    #   s=3: 27, 9, 3, 1   s=2: 12, 4, 1   s=1: 6, 2   s=0: 4
    b = policy.brackets
    assert [b[0].capacity(k) for k in (1, 2, 3)] == [9, 3, 1]
    assert [b[1].capacity(k) for k in (2, 3)] == [4, 1]
    assert b[2].capacity(3) == 2


def test_hyperband_brackets_truncate_inside_the_first_cycle() -> None:
    # rungs 1, 3, 9 (K=2): s=2: ⌈3/3·9⌉ = 9 @0, s=1: ⌈3/2·3⌉ = ⌈4.5⌉ = 5 @1, s=0: 3 @2.
    # 15 trials: 9 + 5 = 14, the last bracket keeps 1 of its 3.
    assert hyperband_brackets(3, 3, 15) == [
        Bracket(0, 9, 0, 3),
        Bracket(9, 5, 1, 3),
        Bracket(14, 1, 2, 3),
    ]
    # Fewer trials than the first bracket: one truncated bracket.
    assert hyperband_brackets(3, 3, 4) == [Bracket(0, 4, 0, 3)]
    # η = 2, rungs 2, 4, 8, 16 (K=3): s=3: ⌈4/4·8⌉ = 8 @0, s=2: ⌈4/3·4⌉ = 6 @1,
    # s=1: ⌈4/2·2⌉ = 4 @2, s=0: 4 @3; 30 trials: 8+6+4+4 = 22, then 8 @0 of the next cycle.
    assert hyperband_brackets(4, 2, 30) == [
        Bracket(0, 8, 0, 2),
        Bracket(8, 6, 1, 2),
        Bracket(14, 4, 2, 2),
        Bracket(18, 4, 3, 2),
        Bracket(22, 8, 0, 2),
    ]


def test_sha_is_one_bracket_of_max_trials() -> None:
    spec = make_spec(
        scheduler={"name": "sha", "resource": "epoch", "minResource": 2, "maxResource": 16,
                   "reductionFactor": 2},
        budget={"maxTrials": 10},
    )  # fmt: skip
    policy = make_scheduler(spec)
    assert isinstance(policy, SuccessiveHalving)
    assert policy.rungs == [2, 4, 8, 16]
    assert policy.brackets == [Bracket(0, 10, 0, 2)]
    # ⌊10/2⌋ = 5, ⌊10/4⌋ = 2, ⌊10/8⌋ = 1.
    assert [policy.brackets[0].capacity(k) for k in (1, 2, 3)] == [5, 2, 1]
    assert all(policy.initial_target(n) == 2 for n in range(10))
