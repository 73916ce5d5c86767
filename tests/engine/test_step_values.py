"""A trial's values by step (trials.StepValues) behave as the dict of step -> value they
replace, whatever the order steps come in, and hold a trial's reports in a fraction of
the dict's bytes."""

from __future__ import annotations

import random
import sys

import pytest

from kubetune.trials import StepValues, TrialRecord


def test_step_values_equal_a_dict_under_any_order_of_steps() -> None:
    for seed in range(300):
        rng = random.Random(seed)
        values, reference = StepValues(), {}
        step = 0
        for _ in range(rng.randint(0, 60)):
            roll = rng.random()
            if roll < 0.75:
                step += rng.choice([1, 1, 5, 300])  # the usual: the next step
            elif roll < 0.9:
                step = max(0, step - rng.randint(0, 40))  # resumed from an older checkpoint
            elif reference and roll < 0.95:
                gone = rng.choice(sorted(reference))
                del values[gone], reference[gone]
                continue
            value = rng.uniform(-1e6, 1e6)
            values[step] = reference[step] = value
            assert values.last_step == max(reference)
        assert dict(values) == reference and values == reference
        assert list(values) == sorted(reference), "iterated in step order"
        assert len(values) == len(reference) and bool(values) == bool(reference)
        for probe in range(-1, step + 2):
            assert (probe in values) == (probe in reference)
            assert values.get(probe) == reference.get(probe)
        assert StepValues(reference) == reference
    assert StepValues().last_step is None
    with pytest.raises(KeyError):
        StepValues({1: 0.5})[2]
    assert "x" not in StepValues({1: 0.5})


def test_a_trial_reports_are_held_in_under_half_the_bytes_of_a_dict() -> None:
    values, reference = StepValues(), {}
    for step in range(241, 271):  # 30 reports past step 256: int keys are objects too
        values[step] = reference[step] = step / 7
    held = sys.getsizeof(values) + sys.getsizeof(values._steps) + sys.getsizeof(values._values)
    as_dict = sys.getsizeof(reference) + sum(
        sys.getsizeof(s) + sys.getsizeof(v) for s, v in reference.items()
    )
    assert held < as_dict / 2, (held, as_dict)


def test_a_trial_record_has_no_per_instance_dict() -> None:
    """Slots: a record's attributes are not a dict of its own (about 0.5 KB a trial)."""
    record = TrialRecord(0, "exp-0")
    assert not hasattr(record, "__dict__")
    assert isinstance(record.values, StepValues)
    record.values[3] = 0.25
    assert record.last_step == 3 and record.value == 0.25
