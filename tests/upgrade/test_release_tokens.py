"""Tokens of pods that kubetune v0.1.0 launched stay good after an upgrade, for those
trials only (the cluster test, test_operator_upgrade, shows it end to end)."""

from __future__ import annotations

import hashlib
import hmac

from kubetune.events import TrialLaunched, last_launch_version, to_record
from kubetune.tokens import TokenAuthority, experiment_scope, release_0_scope

KEY = b"k" * 32


def release_0_token(trial: str) -> str:
    # What v0.1.0's TokenAuthority(key, "ns/exp").token_for(trial) gave its pods.
    return hmac.new(KEY, f"ns/exp/{trial}".encode(), hashlib.sha256).hexdigest()


def test_release_0_tokens_are_refused_unless_accepted_for_that_trial() -> None:
    tokens = TokenAuthority(KEY, experiment_scope("ns", "exp", "uid-1"))
    assert not tokens.verify(release_0_token("exp-1"), "exp-1")
    tokens.accept_release_0(release_0_scope("ns", "exp"), ["exp-1"])
    assert tokens.verify(release_0_token("exp-1"), "exp-1")
    assert not tokens.verify(release_0_token("exp-2"), "exp-2")  # launched since: new token
    assert not tokens.verify(release_0_token("exp-1"), "exp-2")  # another trial's
    assert tokens.verify(tokens.token_for("exp-2"), "exp-2")
    tokens.accept_release_0(release_0_scope("ns", "exp"), [])
    assert not tokens.verify(release_0_token("exp-1"), "exp-1")


def test_a_recreated_experiment_does_not_take_release_0_tokens_of_its_namesake() -> None:
    tokens = TokenAuthority(KEY, experiment_scope("ns", "exp", "uid-2"))
    tokens.accept_release_0(release_0_scope("ns", "exp"), [])  # its records are all v1
    assert not tokens.verify(release_0_token("exp-1"), "exp-1")


def test_the_last_launch_record_says_which_release_launched_the_pod() -> None:
    v1 = to_record(TrialLaunched(1, 2, True, 9, 5.0))
    v0 = {k: v for k, v in to_record(TrialLaunched(1, 1, False, 3, 1.0)).items() if k != "v"}
    assert last_launch_version([]) is None
    assert last_launch_version([v0]) == 0
    assert last_launch_version([v0, v1]) == 1
