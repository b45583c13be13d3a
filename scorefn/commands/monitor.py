"""``monitor``: evaluate input and prediction drift now and write the report."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from scorefn.commands.storage_args import (
    LOGS,
    MODELS,
    add_storage_args,
    app_settings,
    blob_service,
    container_name,
)


def register(subparsers) -> None:
    monitor = subparsers.add_parser(
        "monitor", help="evaluate input and prediction drift now and write the drift report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Merge the served counts the instances and batch jobs wrote over the window, "
                    "compare them with each model's reference profile (uploaded with "
                    "`upload-model --reference-data`; without one, with the model's training "
                    "ranges) and between the endpoint's variants, and write a report per endpoint: "
                    "features ranked by drift, reference and served histograms of the worst ones, "
                    "missing and out-of-range rates, the predictions over time. The same "
                    "evaluation the app's timer runs every MONITOR_SCHEDULE; see "
                    "docs/monitoring.md.",
        epilog="examples:\n"
               "  python -m scorefn monitor --endpoint churn --out reports/\n"
               "  python -m scorefn monitor --out reports/ --hours 168 --format md\n"
               "  python -m scorefn monitor --endpoint churn --out reports/ --write-summary")
    monitor.add_argument("--endpoint", help="one endpoint (default: every endpoint with served "
                                            "counts in the window)")
    monitor.add_argument("--out", required=True, type=Path, metavar="DIR",
                         help="folder for the reports, monitor-ENDPOINT.html (or .md)")
    monitor.add_argument("--format", choices=("html", "md"), default="html",
                         help="html (self-contained) or md (plots as PNG files beside it)")
    monitor.add_argument("--hours", type=int, default=None,
                         help="window: the last HOURS hours (default $MONITOR_WINDOW_HOURS or 24)")
    monitor.add_argument("--psi-threshold", type=float, default=None,
                         help="PSI at which a feature counts as drifted (default "
                              "$MONITOR_PSI_THRESHOLD or 0.2)")
    monitor.add_argument("--min-rows", type=int, default=None,
                         help="fewest (effective) rows for a drift to count (default "
                              "$MONITOR_MIN_ROWS or 200)")
    monitor.add_argument("--write-summary", action="store_true",
                         help="also write the summary blobs, as the timer does (the A/B report "
                              "reads the latest)")
    monitor.add_argument("--monitor-container", metavar="NAME",
                         help="default $MONITOR_CONTAINER or monitoring")
    monitor.add_argument("--models-container", metavar="NAME",
                         help="default $MODEL_CONTAINER or models")
    add_storage_args(monitor, "logs")
    monitor.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from scorefn.monitoring.render import monitor_report_name, write_report
    from shared.monitoring.blobs import write_summary
    from shared.monitoring.evaluate import DriftMonitor, Thresholds

    settings = app_settings()
    hours = args.hours if args.hours is not None else settings.monitor_window_hours
    psi = args.psi_threshold if args.psi_threshold is not None else settings.monitor_psi_threshold
    min_rows = args.min_rows if args.min_rows is not None else settings.monitor_min_rows
    if not 1 <= hours <= 24 * 90:
        raise SystemExit("--hours must be from 1 to 2160")
    if not psi > 0 or min_rows < 1:
        raise SystemExit("--psi-threshold must be positive and --min-rows at least 1")
    monitoring = blob_service(args, LOGS).get_container_client(
        container_name(args.monitor_container, "monitor_container"))
    models = blob_service(args, MODELS).get_container_client(
        container_name(args.models_container, "model_container"))
    drift = DriftMonitor(monitoring, models, Thresholds(psi, min_rows, hours))
    now = datetime.now(UTC)
    endpoints = [args.endpoint] if args.endpoint else drift.endpoints(now)
    if not endpoints:
        print(f"no served counts in the last {hours} h (is MONITOR_ENABLED on, and has the app "
              f"scored anything?)")
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    found = 0
    for endpoint in endpoints:
        summary = drift.evaluate(endpoint, now)
        if not summary.comparisons:
            print(f"{endpoint}: no served counts in the last {hours} h")
            continue
        found += 1
        path = args.out / monitor_report_name(endpoint, markdown=args.format == "md")
        write_report(summary, path)
        if args.write_summary:
            write_summary(monitoring, summary, now)
        for line in summary_lines(summary):
            print(line)
        print(f"  report: {path}")
    return 0 if found else 1


def summary_lines(summary) -> list[str]:
    """Per comparison: the rows, the worst feature, the predictions' PSI."""
    lines = [f"{summary.endpoint}: {summary.window_start} to {summary.window_end}"]
    for c in summary.comparisons:
        worst = c.worst
        what = (f"most drifted {worst.name} (PSI {worst.psi:.3f}"
                f"{', DRIFTED' if worst.drifted else ''})" if worst is not None else "no features")
        pred = f", predictions PSI {c.predictions.psi:.3f}" if c.predictions is not None else ""
        lines.append(f"  {c.variant} ({c.model}) vs {c.baseline_name}: {c.served_rows:,} rows, "
                     f"{what}{pred}")
    return lines
