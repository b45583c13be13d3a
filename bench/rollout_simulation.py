"""Simulated progressive rollouts: false promotions of the rollout's confidence sequence against
the report's z test peeked at every evaluation, and how fast each promotes a better candidate
and rolls back a worse one.

A rollout: the candidate's share of users at 5%, 25% and 50%, 30 minutes each, an evaluation
every 5 minutes over all the outcomes so far (18 looks); 500 new users between two looks, 4
outcomes each on average, a per-user random effect correlating a user's outcomes; the decision
metric is log loss, ``min_effect`` (and the confidence sequence's ``tau``) 0.02. Four
scenarios: the same model in both arms (A/A), a better and a worse candidate, and an A/A
rollout held at 50% for another hour (where ``no_difference`` can be reached). See
``scorefn/rollout/simulate.py`` and docs/rollout-statistics.md.

    .venv/bin/python bench/rollout_simulation.py [--rollouts 1000] [--seed 20261207]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scorefn.rollout.simulate import Plan, RuleRates, SimulationResult, simulate  # noqa: E402

CONTROL_NOISE = 0.6  # the control model's logit noise; the candidates' below
SCENARIOS = [
    ("A/A: the same model", 0.6, Plan()),
    ("better candidate", 0.0, Plan()),
    ("worse candidate", 0.85, Plan()),
    ("A/A held at 50% for 1 more hour", 0.6, Plan(shares=(0.05, 0.25, 0.5, 0.5, 0.5))),
]


def _median(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _row(name: str, r: RuleRates) -> str:
    return (f"  {name:22s} {r.promoted:9.1%} {r.rolled_back:9.1%} {r.no_difference:9.1%} "
            f"{r.undecided:9.1%} {_median(r.median_outcomes_to_promote):>10s} "
            f"{_median(r.median_minutes_to_promote):>6s} {_median(r.median_outcomes_to_roll_back):>10s} "
            f"{_median(r.median_minutes_to_roll_back):>6s}")


def report(title: str, result: SimulationResult, seconds: float) -> None:
    print(f"\n{title}: true difference {result.true_delta:+.4f} log loss per outcome; "
          f"{result.rollouts:,} rollouts, {result.looks} looks ({seconds:.1f} s)")
    print(f"  {'rule':22s} {'promoted':>9s} {'rolled bk':>9s} {'no diff':>9s} {'undecided':>9s} "
          f"{'outc. prom':>10s} {'min':>6s} {'outc. roll':>10s} {'min':>6s}")
    for name, rates in (("confidence sequence", result.sequential), ("z test, every look", result.peeked_z),
                        ("z test, last look only", result.final_z)):
        print(_row(name, rates))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=20261207)
    args = parser.parse_args(argv)
    print(f"Simulated rollouts, alpha 0.05, min_effect = tau = 0.02 log loss, at least 30 users per arm "
          f"before any verdict; control noise {CONTROL_NOISE} (medians: outcomes in both arms and "
          f"minutes at the verdict)")
    for i, (title, candidate_noise, plan) in enumerate(SCENARIOS):
        t0 = time.perf_counter()
        result = simulate(control_noise=CONTROL_NOISE, candidate_noise=candidate_noise,
                          rollouts=args.rollouts, seed=args.seed + i, plan=plan)
        report(title, result, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
