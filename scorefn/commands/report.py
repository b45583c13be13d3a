"""``report``: compare an endpoint's variants from the prediction and outcome logs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scorefn.commands.storage_args import LOGS, add_storage_args, blob_service, container_name


def register(subparsers) -> None:
    report = subparsers.add_parser(
        "report", help="A/B report of an endpoint's variants from the prediction and outcome logs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read the prediction log and the outcomes of an endpoint for a time range, "
                    "join outcomes to predictions (by request id, or by sticky key: the key's "
                    "latest prediction at or before the outcome), and write an HTML or Markdown "
                    "report: per variant the metric that fits the objective with 95% intervals, "
                    "the difference to the control with a test and a verdict, latency "
                    "percentiles, shadow agreement, score distributions and the daily metric.",
        epilog="examples:\n"
               "  python -m scorefn report --endpoint churn --since 2026-11-01 --out report.html\n"
               "  python -m scorefn report --endpoint churn --outcomes-csv labels.csv "
               "--control control --out report.md --account-url https://ACCOUNT.blob.core.windows.net")
    report.add_argument("--endpoint", required=True, help="endpoint name, e.g. churn")
    report.add_argument("--out", required=True, type=Path, metavar="FILE",
                        help="report file: .html (self-contained) or .md (plots in NAME-plots/ beside it: "
                             "report-plots/ for report.md)")
    report.add_argument("--since", metavar="ISO", help="first prediction time (default: 7 days "
                        "before --until); UTC unless a zone is given")
    report.add_argument("--until", metavar="ISO", help="end of the prediction time range (default: now)")
    report.add_argument("--outcomes-until", metavar="ISO",
                        help="read outcomes received up to this time (default: now; outcomes "
                             "arrive after their predictions)")
    report.add_argument("--outcomes-csv", type=Path, metavar="FILE",
                        help="more outcomes from a CSV file with a header: request_id or key, "
                             "label, optional time (ISO) and row; they win over logged ones")
    report.add_argument("--no-outcome-log", action="store_true",
                        help="use only --outcomes-csv, not the outcomes posted to the app")
    report.add_argument("--control", metavar="VARIANT",
                        help="the variant others are compared with (default: the first variant "
                             "of the router config, as logged)")
    report.add_argument("--threshold", type=float, default=0.5,
                        help="decision threshold for shadow flips and binary accuracy (default 0.5)")
    report.add_argument("--objective", choices=("binary", "regression", "multiclass"),
                        help="override the objective recorded in the log")
    report.add_argument("--metric", choices=("auc", "log_loss", "brier", "accuracy", "rmse", "mae"),
                        help="the deciding metric (default: auc for binary, rmse for regression, "
                             "log_loss for multiclass)")
    report.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    report.add_argument("--json", type=Path, metavar="FILE", dest="json_out",
                        help="also write the numbers as JSON")
    report.add_argument("--predictions-container", metavar="NAME",
                        help="default $PREDICTION_LOG_CONTAINER or predictions")
    report.add_argument("--outcomes-container", metavar="NAME",
                        help="default $OUTCOME_LOG_CONTAINER or outcomes")
    add_storage_args(report, "logs")
    report.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from scorefn.ab.report import ReportOptions, make_report
    from shared.ablog.dataset import parse_when

    if args.no_outcome_log and not args.outcomes_csv:
        raise SystemExit("--no-outcome-log needs --outcomes-csv")
    if not 0 < args.alpha < 0.5:
        raise SystemExit("--alpha must be between 0 and 0.5")
    try:
        since = parse_when(args.since) if args.since else None
        until = parse_when(args.until) if args.until else None
        outcomes_until = parse_when(args.outcomes_until) if args.outcomes_until else None
    except ValueError:
        raise SystemExit("--since, --until and --outcomes-until take ISO 8601 dates or times, "
                         "e.g. 2026-11-24 or 2026-11-24T10:00:00Z") from None
    if args.outcomes_csv is not None and not args.outcomes_csv.is_file():
        raise SystemExit(f"no file {args.outcomes_csv}")
    service = blob_service(args, LOGS)
    predictions = service.get_container_client(
        container_name(args.predictions_container, "prediction_log_container"))
    outcomes = service.get_container_client(
        container_name(args.outcomes_container, "outcome_log_container"))
    options = ReportOptions(
        endpoint=args.endpoint, out=args.out, since=since, until=until,
        outcomes_until=outcomes_until, outcomes_csv=args.outcomes_csv,
        use_outcome_log=not args.no_outcome_log, control=args.control, threshold=args.threshold,
        objective=args.objective, metric=args.metric, alpha=args.alpha, json_out=args.json_out)
    # Drift summaries are in the monitoring container, on the prediction log's connection.
    monitoring = service.get_container_client(container_name(None, "monitor_container"))
    try:
        analysis = make_report(predictions, outcomes, options, monitoring=monitoring)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    print_summary(analysis, args.out)
    return 0 if analysis["variants"] else 1


def print_summary(analysis: dict, out: Path, say=print) -> None:
    """A few lines: per variant the deciding metric, then the verdicts and the file."""
    from scorefn.ab.stats import METRICS

    metric = analysis["primary_metric"]
    label = METRICS[metric].label
    if not analysis["variants"]:
        say(f"no predictions of endpoint {analysis['endpoint']!r} in the log for this time range "
            f"(is the endpoint's 'log' block set in the router config?)")
    for v in analysis["variants"]:
        m = v["metrics"][metric]
        value = "n/a" if m["value"] is None else (
            f"{m['value']:.4f} [{m['low']:.4f}, {m['high']:.4f}]" if m["low"] is not None
            else f"{m['value']:.4f}")
        say(f"  {v['name']:16s} {v['requests']:>8,} requests {v['outcomes']:>8,} outcomes   "
            f"{label} {value}" + ("   (control)" if v["control"] else ""))
    for c in analysis["comparisons"]:
        say(f"  verdict: {c['text']}")
    for s in analysis["shadows"]:
        ag = s["agreement"]
        corr = "n/a" if ag["correlation"] is None else f"{ag['correlation']:.3f}"
        flipped = "" if ag["flipped"] is None else f", {100 * ag['flipped']:.1f}% decisions flipped"
        say(f"  shadow {s['name']} vs {s['answer_variant']}: correlation {corr}{flipped}")
    say(f"  report: {out}")
    sys.stdout.flush()
