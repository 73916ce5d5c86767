from __future__ import annotations

import math

import pytest

from kubetune.logparse import parse_metrics_line


@pytest.mark.parametrize(
    ("line", "resource", "count", "expected"),
    [
        ("epoch=3 val_loss=0.41", "epoch", 1, (3, {"val_loss": 0.41})),
        ("val_loss=0.41 acc=0.9", "epoch", 4, (4, {"val_loss": 0.41, "acc": 0.9})),
        ("val_loss=0.41", None, 2, (2, {"val_loss": 0.41})),
        ("  loss=1e-3  ", None, 1, (1, {"loss": 0.001})),
        ("train.loss=2", None, 1, (1, {"train.loss": 2.0})),
    ],
)
def test_metric_lines(line, resource, count, expected) -> None:
    assert parse_metrics_line(line, resource, count) == expected


@pytest.mark.parametrize(
    "line",
    [
        "",
        "Epoch 3: val_loss=0.41",
        "val_loss=high",
        "epoch=1.5 val_loss=0.3",
        "epoch=-1 val_loss=0.3",
        "=3",
        "3=val",
        "url=http://x",
    ],
)
def test_other_lines_are_output(line: str) -> None:
    assert parse_metrics_line(line, "epoch", 1) is None


def test_nan_is_kept_so_the_engine_can_fail_the_trial() -> None:
    parsed = parse_metrics_line("epoch=2 val_loss=nan", "epoch", 1)
    assert parsed is not None and parsed[0] == 2 and math.isnan(parsed[1]["val_loss"])
