"""TPE's random stream, carried in the history as a position: kubetune's `tpe` draws what a
long-lived Optuna TPESampler draws.

A long-lived `TPESampler(seed=s)` draws its candidates from one generator seeded with s,
which advances over the asks. kubetune builds a new sampler at each ask (a suggestion is
a pure function of the stored history), and used to seed it per trial; the points were as
random, but a different stream from Optuna's for the same seed, and on Hartmann-6 at p=4
the mean regret over seeds 0-399 was 0.480 against Optuna's 0.444 (and 0.508 for Optuna
given another generator seed: the streams' luck, not the algorithm). Now the generator is
seeded with the experiment's seed and advanced to where the last suggestion left it, so
kubetune's `tpe` and Optuna's long-lived TPESampler draw the same points for the same
seed, at any parallelism (tests/engine/test_tpe_stream.py).

The position is a count of the 32-bit words the generator has produced (MT19937 makes
one per word drawn and nothing else), an integer in a study attribute, like the GP's
kernel; the generator's whole state would be 2.5 KB per trial. Getting back to a
position costs drawing that many words, about 7 ms per million (TPE draws a few hundred
an ask).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import numpy as np
from optuna.samplers import TPESampler

TPE_STREAM_ATTR = "kubetune:tpe_stream"
"""Study attribute: the position of the experiment's TPE generator (32-bit words drawn)."""

MAX_POSITION = 10**9
"""Far past any real experiment's (a few hundred words an ask: about 5 million at 10,000
trials); a larger one in a history is refused rather than drawn for minutes."""

_WORDS_PER_STATE = 624  # MT19937 regenerates its 624-word state every 624 words
_CHUNK = 1 << 20


def _advance(generator: np.random.RandomState, words: int) -> None:
    """Draw `words` 32-bit words (full-range uint32 draws take exactly one each)."""
    while words > 0:
        size = min(words, _CHUNK)
        generator.randint(0, 2**32, size=size, dtype=np.uint32)
        words -= size


def _state(generator: np.random.RandomState) -> tuple[Any, ...]:
    return cast(tuple[Any, ...], generator.get_state(legacy=True))


def generator_at(seed: int, position: int) -> np.random.RandomState:
    generator = np.random.RandomState(seed)
    _advance(generator, position)
    return generator


def _words_between(before: tuple[Any, ...], after: tuple[Any, ...]) -> int | None:
    """Words drawn from state `before` to state `after`; None if `after` is not reached
    by drawing words (a cached Gaussian, say: not a position)."""
    _, keys, pos, has_gauss, _ = after
    if has_gauss:
        return None
    probe = np.random.RandomState()
    probe.set_state(before)
    drawn = 0
    for _ in range(1 << 16):  # a bound: no ask draws anywhere near 40 million words
        current = _state(probe)
        if np.array_equal(current[1], keys) and current[2] <= pos:
            return drawn + pos - current[2]
        step = _WORDS_PER_STATE - current[2] if current[2] < _WORDS_PER_STATE else 1
        _advance(probe, step)
        drawn += step
    return None


class StreamPosition:
    """One ask's use of the stream: the sampler's generator is put where the experiment's
    stream stands, and `after()` is where the ask left it."""

    def __init__(self, sampler: TPESampler, seed: int, study_attrs: Mapping[str, Any]) -> None:
        self.sampler = sampler
        self.start = study_attrs.get(TPE_STREAM_ATTR, 0)
        if type(self.start) is not int or not 0 <= self.start <= MAX_POSITION:
            raise ValueError(f"study attribute {TPE_STREAM_ATTR}: not a position: {self.start!r}")
        self.state = _state(generator_at(seed, self.start))
        sampler._rng.rng.set_state(self.state)  # Optuna's LazyRandomState: generator `rng`

    def after(self) -> int:
        drawn = _words_between(self.state, _state(self.sampler._rng.rng))
        if drawn is None:
            raise RuntimeError(
                "Optuna's TPESampler drew from its generator in a way kubetune cannot carry "
                "as a position (a Gaussian draw?): this Optuna version is not supported"
            )
        return self.start + drawn
