"""What kubetune's spot capacity saves, measured against the ways people run the same work.

One experiment (64 trials, ASHA 1..27 with reduction factor 3, random search so that
trial N has the same parameters everywhere, 8 trials in parallel), once with single-pod
trials and once with 2-worker gang trials (2 one-GPU pods per trial, placed, reclaimed
and resumed together), runs on a virtual clock under each kind of capacity
(`costsim.Capacity`; the model is in bench/costsim.py):

1. **kubetune-spot**: spot nodes scaled by kubetune's own `capacity.scaling.plan`;
   interrupted trials resume from their checkpoint; a reclaim notice (the node's
   termination taint) makes the trial checkpoint at its next report and leave.
   Its cost is kubetune's ledger (`capacity.accounting.CostBook`), checked against this
   bench's own computation (they must agree within 1%).
2. **kubetune-spot-no-notice**: the same, with the notices ignored (today's behaviour
   before issue 16): a reclaimed trial resumes from its last rung's checkpoint.
3. **spot-restart**: the same spot pool, where an interrupted trial starts again from
   step 1 (what peers without checkpoint resume do).
4. **ondemand-autoscaled**: on-demand nodes scaled as the cluster autoscaler does by
   default (a node unneeded for 10 minutes is removed, one at a time; no scale-down for
   10 minutes after a scale-up).
5. **ondemand-always-on**: 8 (gangs: 16) on-demand nodes from the first decision to the end.

Over `--seeds` seeds (spot prices, reclaim times, the sampler), it prints per workload a
table (mean, median, standard error over the seeds), then the RESULT line:
`RESULT cost_ratio_vs_autoscaled_ondemand=<x> cost_ratio_vs_spot_restart=<y>
idle_gpu_fraction=<z> lost_gpu_seconds_per_interruption=<w>
lost_gpu_seconds_per_interruption_no_notice=<v> ledger_error=<e>` (one line):
x and y are kubetune-spot's cost over the peer's, the mean over seeds and both
workloads of each seed's ratio of their total costs; z is kubetune-spot's node
GPU-seconds not running a trial pod over all its node GPU-seconds (both workloads, all
seeds); w and v are GPU-seconds lost per interruption (training no checkpoint kept, and
checkpoints written because of a notice), with and without notices; e is the largest
relative difference between the ledger and the bench's own cost.

    nice -n 10 .venv/bin/python bench/cost.py            # 10 seeds, a few minutes
    .venv/bin/python bench/cost.py --quick               # the smoke test's run
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from dataclasses import replace

from costsim import Capacity, Outcome, Run, Setup

LEDGER_TOLERANCE = 0.01


def _summary(values: list[float]) -> str:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return f"{mean:9.3f} {statistics.median(values):9.3f} {se:7.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 trials, 2 seeds: the smoke test")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.seeds < 1:
        print("cost.py: --seeds must be >= 1", file=sys.stderr)
        return 2
    base = Setup()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    if args.quick:
        base = Setup(trials=16, parallel=4, max_resource=9, mean_hours_to_reclaim=0.5)
        seeds = range(args.first_seed, args.first_seed + 2)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs: dict[tuple[int, int, Capacity], Outcome] = {}
    for workers in (1, 2):
        for seed in seeds:
            setup = replace(base, workers=workers, seed=seed)
            for capacity in Capacity:
                runs[(workers, seed, capacity)] = Run(setup, capacity).run()
    worst_ledger = 0.0
    for (workers, seed, capacity), outcome in runs.items():
        if outcome.ledger_usd is None:
            continue
        error = abs(outcome.ledger_usd - outcome.cost_usd) / outcome.cost_usd
        worst_ledger = max(worst_ledger, error)
        if error > LEDGER_TOLERANCE:
            print(
                f"cost.py: {capacity} workers={workers} seed={seed}: ledger "
                f"${outcome.ledger_usd:.4f} vs bench ${outcome.cost_usd:.4f}",
                file=sys.stderr,
            )
            return 1
    rows: list[tuple[str, Callable[[Outcome], float]]] = [
        ("cost (USD)", lambda o: o.cost_usd),
        ("ledger (USD)", lambda o: o.ledger_usd if o.ledger_usd is not None else float("nan")),
        ("makespan (h)", lambda o: o.makespan / 3600),
        ("GPU-node hours", lambda o: o.node_seconds / 3600),
        ("trial GPU hours", lambda o: o.busy_seconds / 3600),
        ("idle GPU fraction", lambda o: o.idle_fraction),
        ("  of it booting", lambda o: o.boot_seconds / o.node_seconds),
        ("  after last trial", lambda o: o.tail_seconds / o.node_seconds),
        ("interruptions", lambda o: float(o.interruptions)),
        ("lost GPU-s/interr.", lambda o: o.lost_per_interruption),
        ("best loss", lambda o: o.best if o.best is not None else float("nan")),
    ]
    print(
        f"{base.trials} trials, ASHA 1..{base.max_resource} (eta 3), {base.parallel} in "
        f"parallel, 1-GPU nodes; spot reclaim mean {base.mean_hours_to_reclaim} node-hours "
        f"({base.notice_seconds:.0f} s notice); seeds {seeds.start}..{seeds.stop - 1}"
    )
    for workers in (1, 2):
        print(f"\n== {workers} pod(s) per trial: mean / median / stderr over {len(seeds)} seeds")
        for capacity in Capacity:
            print(f"-- {capacity}")
            outcomes = [runs[(workers, seed, capacity)] for seed in seeds]
            for label, value in rows:
                values = [value(o) for o in outcomes]
                if all(v == v for v in values):  # no NaN
                    print(f"   {label:20} {_summary(values)}")
    print(
        f"\nkubetune-spot cost: ledger (capacity.accounting.CostBook) vs the bench's own "
        f"computation: largest difference {worst_ledger:.4%} (tolerance {LEDGER_TOLERANCE:.0%})"
    )
    for workers in (1, 2):
        ours_runs = [runs[(workers, s, Capacity.KUBETUNE_SPOT)] for s in seeds]
        ledger = statistics.fmean(o.ledger_usd or 0.0 for o in ours_runs)
        bench = statistics.fmean(o.cost_usd for o in ours_runs)
        print(f"workers={workers}: ledger ${ledger:.3f} vs bench ${bench:.3f} (mean per run)")

    def ratio(peer: Capacity) -> float:
        per_seed = []
        for seed in seeds:
            ours = sum(runs[(w, seed, Capacity.KUBETUNE_SPOT)].cost_usd for w in (1, 2))
            theirs = sum(runs[(w, seed, peer)].cost_usd for w in (1, 2))
            per_seed.append(ours / theirs)
        return statistics.fmean(per_seed)

    ours = [o for (_, _, c), o in runs.items() if c is Capacity.KUBETUNE_SPOT]
    idle = 1.0 - sum(o.busy_seconds for o in ours) / sum(o.node_seconds for o in ours)

    def lost(capacity: Capacity) -> float:
        chosen = [o for (_, _, c), o in runs.items() if c is capacity]
        count = sum(o.interruptions for o in chosen)
        return sum(o.lost_gpu_seconds for o in chosen) / count if count else 0.0

    print(
        "lost GPU-seconds per interruption, all runs: "
        + ", ".join(
            f"{c} {lost(c):.1f}"
            for c in (
                Capacity.KUBETUNE_SPOT,
                Capacity.KUBETUNE_SPOT_NO_NOTICE,
                Capacity.SPOT_RESTART,
            )
        )
    )
    print(
        f"RESULT cost_ratio_vs_autoscaled_ondemand={ratio(Capacity.ONDEMAND_AUTOSCALED):.4f} "
        f"cost_ratio_vs_spot_restart={ratio(Capacity.SPOT_RESTART):.4f} "
        f"idle_gpu_fraction={idle:.4f} "
        f"lost_gpu_seconds_per_interruption={lost(Capacity.KUBETUNE_SPOT):.1f} "
        f"lost_gpu_seconds_per_interruption_no_notice={lost(Capacity.KUBETUNE_SPOT_NO_NOTICE):.1f} "
        f"ledger_error={worst_ledger:.5f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
