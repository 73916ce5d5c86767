"""Conditions and grids of the search space."""

from __future__ import annotations

from kubetune.space import is_active, iter_grid

from .helpers import make_spec


def test_conditions_on_numeric_parameters_match_by_value() -> None:
    """The spec accepts `when: {x: 1}` for a float x and `when: {k: 2.0}` for an int k;
    YAML reads `1` as an int. Grid by hand: x in {0.0, 1.0, 2.0}, c in {0, 1} only when
    x = 1; k in {1, 2, 3}, d in {5, 6} only when k = 2 -> (1 + 2 + 1) x (1 + 2 + 1) = 16."""
    spec = make_spec(
        parameters=[
            {"name": "x", "type": "float", "min": 0, "max": 2, "step": 1},
            {"name": "c", "type": "int", "min": 0, "max": 1, "when": {"x": 1}},
            {"name": "k", "type": "int", "min": 1, "max": 3},
            {"name": "d", "type": "int", "min": 5, "max": 6, "when": {"k": 2.0}},
        ],
        algorithm={"name": "grid"},
    )
    points = list(iter_grid(spec.parameters))
    assert len(points) == 16
    assert sum("c" in p for p in points) == 8 and all(p["x"] == 1.0 for p in points if "c" in p)
    assert sum("d" in p for p in points) == 8 and all(p["k"] == 2 for p in points if "d" in p)


def test_conditions_keep_bool_and_str_apart_from_numbers() -> None:
    spec = make_spec(
        parameters=[
            {"name": "flag", "type": "categorical", "values": [True, 1, "1"]},
            {"name": "a", "type": "int", "min": 0, "max": 1, "when": {"flag": 1}},
            {"name": "b", "type": "int", "min": 0, "max": 1, "when": {"flag": [True, "1"]}},
        ]
    )
    _, a, b = spec.parameters
    assert is_active(a, {"flag": 1}) and not is_active(a, {"flag": True})
    assert not is_active(a, {"flag": "1"})
    assert is_active(b, {"flag": True}) and is_active(b, {"flag": "1"})
    assert not is_active(b, {"flag": 1})
    assert not is_active(a, {})  # the parent is inactive itself


def test_nested_conditions_in_the_grid() -> None:
    """opt sgd | adam; amsgrad only for adam; eps only when amsgrad is true:
    sgd (1) + adam/false (1) + adam/true x eps {1, 2} (2) = 4 points."""
    spec = make_spec(
        parameters=[
            {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]},
            {
                "name": "amsgrad",
                "type": "categorical",
                "values": [True, False],
                "when": {"opt": "adam"},
            },
            {"name": "eps", "type": "int", "min": 1, "max": 2, "when": {"amsgrad": True}},
        ],
        algorithm={"name": "grid"},
    )
    assert sorted(map(str, iter_grid(spec.parameters))) == sorted(
        map(
            str,
            [
                {"opt": "sgd"},
                {"opt": "adam", "amsgrad": False},
                {"opt": "adam", "amsgrad": True, "eps": 1},
                {"opt": "adam", "amsgrad": True, "eps": 2},
            ],
        )
    )
