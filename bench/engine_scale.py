"""The engine alone at bench/scale.py's phase-1 shape: is a report's cost flat in the
number of trials?

The operator answers every report with `Engine.report` and `Engine.decide` (and a
suggestion per new trial, off its event loop). Here the real engine, scheduler and
sampler run on `kubetune.simulate`'s virtual clock, with no API server, so that what
is left is kubetune's own CPU: algorithm random, ASHA (resource step, minResource 10,
maxResource 270, reductionFactor 3), every step reported, 200 trials at once,
``--trials`` trials (default 10,000). Printed: the wall time per report (report,
decide and the suggestions), averaged over each tenth of the trials as they are
created, and over the tail (the last trials finishing).

The last line is ``RESULT engine_us_per_report_last_tenth=<a>
engine_cost_growth_last_vs_first_tenth=<b>``: b near 1 means a report costs the same
at the end as at the start (before the phase index, rung ladders and history-free
random search, b was 5.5 at 1,000 trials, a report cost 5.8 ms there, and 2,000 trials
took 460 s: at 10,000, hours).

    nice .venv/bin/python bench/engine_scale.py               # 10,000 trials, ~30 s
    .venv/bin/python bench/engine_scale.py --trials 1000      # quicker
"""

from __future__ import annotations

import argparse
import time

from kubetune import simulate
from kubetune.engine import Engine
from kubetune.space import Params


def objective(params: Params, step: int) -> float:
    return (float(params["x"]) - 0.3) ** 2 + 1.0 / step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--parallel", type=int, default=200)
    args = parser.parse_args()
    spec = simulate.make_spec(
        [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}],
        algorithm={"name": "random", "seed": 1},
        scheduler={
            "name": "asha",
            "resource": "step",
            "minResource": 10,
            "maxResource": 270,
            "reductionFactor": 3,
        },
        budget={"maxTrials": args.trials, "parallelTrials": args.parallel},
    )
    marks: list[tuple[int, float, int]] = []  # (trials, seconds, reports) per tenth
    reports = 0
    start = time.perf_counter()
    original = Engine.report

    def timed_report(engine: Engine, *args_: object, **kwargs: object) -> object:
        nonlocal reports
        reports += 1
        tenth = len(engine.trials) * 10 // engine.spec.budget.maxTrials
        if tenth > len(marks):
            marks.append((len(engine.trials), time.perf_counter() - start, reports))
        return original(engine, *args_, **kwargs)  # type: ignore[arg-type]

    Engine.report = timed_report  # type: ignore[method-assign]
    try:
        result = simulate.simulate(spec, objective)
    finally:
        Engine.report = original  # type: ignore[method-assign]
    total = time.perf_counter() - start
    marks.append((len(result.engine.trials), total, reports))
    print(f"{'trials':>8} {'seconds':>8} {'reports':>9} {'us/report':>10}")
    windows: list[float] = []
    before = (0.0, 0)
    for index, (trials, seconds, count) in enumerate(marks):
        cost = 1e6 * (seconds - before[0]) / max(count - before[1], 1)
        tail = index == len(marks) - 1
        label = "tail" if tail else f"{trials:8d}"
        print(f"{label:>8} {seconds:8.1f} {count:9d} {cost:10.0f}")
        if not tail and count - before[1] >= 100:  # a window with reports enough to time
            windows.append(cost)
        before = (seconds, count)
    print(
        f"{len(result.engine.trials)} trials, {reports} reports in {total:.1f} s (tail: "
        "after the last trial exists, while the running ones finish)"
    )
    print(
        f"RESULT engine_us_per_report_last_tenth={windows[-1]:.0f} "
        f"engine_cost_growth_last_vs_first_tenth={windows[-1] / windows[0]:.2f}"
    )


if __name__ == "__main__":
    main()
