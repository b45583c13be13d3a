"""Simulated drift monitoring: false alarms on unshifted served rows by sample size, the power
to catch a unit change and a feature gone missing, and why a p-value is not the alert.

Two data sets, each through the monitoring code the function app runs (``reference_binning``,
``count``, ``compare``): the demo's generated churn features (a 20,000-row reference, fresh
served samples from the same generator) and scikit-learn's breast cancer data (569 real
rows: a random half is the reference and the model's training set, served samples are
bootstrap resamples of the other half). See ``scorefn/monitoring/false_alarms.py`` and
docs/monitoring-statistics.md.

    .venv/bin/python bench/drift_false_alarms.py [--samples 800] [--seed 20261207]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scorefn.monitoring.false_alarms import (  # noqa: E402
    NUDGE_ALPHA,
    SIZES,
    UNIT_FACTOR,
    UNIT_SHARE,
    Scenario,
    SizeRates,
    cancer_scenarios,
    churn_scenario,
    detection,
    false_alarms,
    nudge,
)
from shared.monitoring.drift import MIN_ROWS, PSI_THRESHOLD, RATE_ALPHA, RATE_JUMP  # noqa: E402

CANCER_SPLITS = 20
SMALL_REFERENCE = 284  # rows: half the breast cancer data
CHURN_SHIFTED, CHURN_EMPTIED = 1, 7  # monthly_charges times 1000, discount_pct all missing
CHURN_NUDGED, NUDGE = 1, 2.0  # monthly_charges + 2 (a tenth of its standard deviation)


def _samples(rows: int, samples: int) -> int:
    """Fewer samples of the large sizes (their rates are 0 or near it, and cost the most)."""
    return samples if rows <= 1_000 else max(samples // 5, 30) if rows <= 5_000 \
        else max(samples // 10, 30)


def _row(r: SizeRates) -> str:
    return (f"  {r.rows:>7,d} {r.samples:>7,d} {r.median_max_psi:>9.3f} {r.any_psi[0]:>8.1%} "
            f"{r.any_psi[1]:>8.1%} {r.any_rate:>8.1%} {r.any_drifted:>8.1%} {r.feature_psi[0]:>8.2%} "
            f"{r.feature_psi[1]:>8.2%} {r.feature_chi2:>8.2%} {r.prediction_drifted:>8.1%}")


def false_alarm_table(title: str, scenarios: list[Scenario], samples: int, seed: int) -> None:
    t0 = time.perf_counter()
    rows = [false_alarms(scenarios, n, _samples(n, samples), seed=seed) for n in SIZES]
    print(f"\n{title} ({time.perf_counter() - t0:.1f} s)")
    print(f"  {'':>7s} {'':>7s} {'max PSI':>9s} {'------- any feature -------':>35s} "
          f"{'---- one feature ----':>26s} {'preds':>8s}")
    print(f"  {'rows':>7s} {'samples':>7s} {'median':>9s} {'>= 0.1':>8s} {'>= 0.2':>8s} "
          f"{'rates':>8s} {'drifted':>8s} {'>= 0.1':>8s} {'>= 0.2':>8s} {'chi2<.01':>8s} {'drifted':>8s}")
    for r in rows:
        print(_row(r))


def power_table(churn: Scenario, samples: int, seed: int) -> None:
    t0 = time.perf_counter()
    names = churn.feature_names
    results = [detection(churn, n, max(samples // 20, 20), shifted=CHURN_SHIFTED,
                         emptied=CHURN_EMPTIED, seed=seed, against_model=model)
               for model in (False, True) for n in (200, 1_000, 5_000)]
    print(f"\nchurn, shifted: {names[CHURN_SHIFTED]} x {UNIT_FACTOR:g} on {UNIT_SHARE:.0%} of the "
          f"rows, {names[CHURN_EMPTIED]} all missing ({time.perf_counter() - t0:.1f} s)")
    print(f"  {'against':>9s} {'rows':>7s} {'samples':>7s} {'flagged':>8s} {'1st':>8s} "
          f"{'PSI':>7s} {'missing':>8s} {'others':>8s}")
    for r in results:
        print(f"  {r.against:>9s} {r.rows:>7,d} {r.samples:>7,d} {r.shifted_flagged:>8.1%} "
              f"{r.shifted_first:>8.1%} {r.psi:>7.3f} {r.emptied_flagged:>8.1%} "
              f"{r.others_flagged:>8.1%}")


def nudge_table(churn: Scenario, samples: int, seed: int) -> None:
    t0 = time.perf_counter()
    results = [nudge(churn, n, max(samples // 20, 20), column=CHURN_NUDGED, delta=NUDGE, seed=seed)
               for n in (1_000, 5_000, 20_000)]
    print(f"\nchurn, harmless: {churn.feature_names[CHURN_NUDGED]} + {NUDGE:g} on every row "
          f"({time.perf_counter() - t0:.1f} s)")
    print(f"  {'rows':>7s} {'samples':>7s} {'PSI':>7s} {f'chi2<{NUDGE_ALPHA:g}':>10s} "
          f"{'flagged':>8s}")
    for r in results:
        print(f"  {r.rows:>7,d} {r.samples:>7,d} {r.psi:>7.3f} {r.chi2_significant:>10.1%} "
              f"{r.flagged:>8.1%}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=800,
                        help="unshifted samples per size up to 1,000 rows (fewer above)")
    parser.add_argument("--seed", type=int, default=20261207)
    args = parser.parse_args(argv)
    print(f"Drift alerts: PSI >= {PSI_THRESHOLD} over >= {MIN_ROWS} effective rows, or a missing/"
          f"out-of-range rate up {RATE_JUMP:.0%} points at p < {RATE_ALPHA:g} with >= {MIN_ROWS} "
          f"rows. Rates are shares of samples (any feature) or of feature tests (one feature).")
    t0 = time.perf_counter()
    churn = churn_scenario(seed=args.seed)
    cancer = cancer_scenarios(CANCER_SPLITS, seed=args.seed)
    print(f"(models trained and references counted in {time.perf_counter() - t0:.1f} s)")
    small = churn_scenario(reference_rows=SMALL_REFERENCE, seed=args.seed + 1)
    false_alarm_table("churn: generated, 8 features, reference 20,000 rows, fresh samples",
                      [churn], args.samples, args.seed)
    false_alarm_table(f"churn: the same, reference {SMALL_REFERENCE} rows", [small],
                      args.samples * 3 // 10, args.seed)
    false_alarm_table(f"breast cancer: real, 30 features, reference {SMALL_REFERENCE} rows, "
                      f"bootstrap of the other 285 ({CANCER_SPLITS} splits)", cancer,
                      args.samples * 3 // 10, args.seed)
    power_table(churn, args.samples, args.seed)
    nudge_table(churn, args.samples, args.seed)


if __name__ == "__main__":
    main()
