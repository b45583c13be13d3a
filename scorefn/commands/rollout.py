"""``rollout``: start, watch, pause, resume or abort the progressive rollout of a candidate model
on an endpoint (see docs/rollout.md). The controller (a timer trigger of the app) does the
rest: it moves the candidate's share step by step, rolls it back when a guardrail breaks or the
outcomes say worse, and promotes it when they say better.

Every command that changes the config writes it over the version it read (``If-Match``), so it
never overwrites a decision the controller made meanwhile.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from scorefn.commands.storage_args import (
    LOGS,
    MODELS,
    add_config_location_args,
    app_settings,
    blob_service,
    config_location,
)


def register(subparsers) -> None:
    rollout = subparsers.add_parser(
        "rollout", help="progressive rollout of a candidate model: start, status, pause, resume, abort",
        description="A rollout gives a candidate model a growing share of an endpoint's traffic "
                    "(steps), checks guardrails against the control at each step (failures, p99 "
                    "latency, prediction shift) and decides on outcomes with an always-valid "
                    "interval. The app's controller runs it on ROLLOUT_SCHEDULE.")
    actions = rollout.add_subparsers(dest="action", metavar="ACTION")

    start = actions.add_parser("start", help="add a candidate to an endpoint and start its rollout",
                               description="Add the candidate variant (weight 0) and a rollout "
                                           "block to ENDPOINT in the stored router config, at its "
                                           "first step; the controller takes it from there.")
    start.add_argument("endpoint")
    start.add_argument("--model", required=True, help="the candidate's model blob name")
    start.add_argument("--candidate", default="candidate", help="the candidate variant's name "
                                                                "(default: candidate)")
    start.add_argument("--control", default=None,
                       help="the control variant (default: the endpoint's only variant with weight)")
    start.add_argument("--steps", default="5,25,50",
                       help="the candidate's share at each step, percent (default: 5,25,50)")
    start.add_argument("--min-minutes", type=float, default=10.0, help="per step (default: 10)")
    start.add_argument("--min-requests", type=int, default=100,
                       help="per variant and step (default: 100)")
    start.add_argument("--max-hours", type=float, default=72.0,
                       help="at the last step without a verdict, pause for a person (default: 72)")
    start.add_argument("--metric", default=None,
                       help="decide on this per-row loss over outcomes (log_loss, brier, "
                            "error_rate, squared_error, absolute_error); default: none, a canary "
                            "promoted when its last step passes its guardrails")
    start.add_argument("--min-effect", type=float, default=None,
                       help="the smallest difference of the metric that matters (required with "
                            "--metric)")
    start.add_argument("--alpha", type=float, default=0.05, help="(default: 0.05)")
    start.add_argument("--max-error-rate-increase", type=float, default=0.01)
    start.add_argument("--max-p99-ratio", type=float, default=1.5)
    start.add_argument("--max-prediction-shift", type=float, default=None,
                       help="Kolmogorov-Smirnov distance of the predictions (default: not checked)")
    start.add_argument("--promote", choices=("only", "keep_control"), default="only")
    add_config_location_args(start)
    start.set_defaults(run=start_rollout)

    status = actions.add_parser("status", help="where a rollout stands and what comes next",
                                description="The rollout's step and share, each guardrail's "
                                            "figure against its limit, the always-valid interval "
                                            "and the decision the controller would make now.")
    status.add_argument("endpoint")
    status.add_argument("--history", type=int, default=5, metavar="N",
                        help="show the last N audited decisions (default: 5)")
    add_config_location_args(status)
    status.set_defaults(run=show_status)

    for name, helptext in (("pause", "stop the controller acting (the shares stay)"),
                           ("resume", "let the controller act again, from the current step"),
                           ("abort", "give the candidate 0%% and end the rollout")):
        action = actions.add_parser(name, help=helptext, description=helptext.replace("%%", "%"))
        action.add_argument("endpoint")
        action.add_argument("--reason", default=f"{name} by a person")
        add_config_location_args(action)
        action.set_defaults(run=change_status, status={"pause": "paused", "resume": "running",
                                                       "abort": "aborted"}[name])
    rollout.set_defaults(run=lambda args: (rollout.print_help(), 2)[1])


def _config_blob(args: argparse.Namespace) -> Any:
    container, blob = config_location(args)
    return blob_service(args, MODELS).get_blob_client(container, blob)


def _controller(args: argparse.Namespace) -> Any:
    from shared.models.blob_source import BlobSource
    from shared.models.store import ModelStore
    from shared.rollout.audit import AuditLog
    from shared.rollout.controller import RolloutController

    settings = app_settings()
    config_blob = _config_blob(args)
    logs = blob_service(args, LOGS)
    predictions = logs.get_container_client(settings.prediction_log_container)
    models = blob_service(args, MODELS).get_container_client(config_blob.container_name)
    store = ModelStore(BlobSource(models, settings.max_model_mb << 20), refresh_seconds=3600)
    return RolloutController(config_blob, predictions=predictions,
                             outcomes=logs.get_container_client(settings.outcome_log_container),
                             audit=AuditLog(predictions), store=store)


def _read(controller: Any, endpoint: str) -> tuple[Any, Any, Any] | None:
    """(stored config, endpoint config, rollout) or ``None`` after printing why not."""
    from shared.errors import InvalidRouterConfig

    try:
        stored = controller.read()
    except InvalidRouterConfig as exc:
        print(f"the stored router config is invalid: {exc.message}", file=sys.stderr)
        return None
    if stored is None or endpoint not in stored.config.endpoints:
        print(f"endpoint {endpoint!r} is not in the router config (add it with `router set`)",
              file=sys.stderr)
        return None
    ep = stored.config.endpoints[endpoint]
    return stored, ep, ep.rollout


def _write(controller: Any, stored: Any, document: dict[str, Any]) -> bool:
    """Validate ``document`` and write it over the version read; False after printing why not."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceModifiedError
    from azure.storage.blob import ContentSettings

    from shared.errors import InvalidRouterConfig
    from shared.router import parse_config

    data = json.dumps(document, indent=2).encode()
    try:
        parse_config(data)
    except InvalidRouterConfig as exc:
        print(f"not written: {exc.message}", file=sys.stderr)
        return False
    try:
        controller.config_blob.upload_blob(
            data, overwrite=True, etag=stored.etag, match_condition=MatchConditions.IfNotModified,
            content_settings=ContentSettings(content_type="application/json"))
    except ResourceModifiedError:
        print("not written: the config changed since it was read (the controller or a person); "
              "run the command again", file=sys.stderr)
        return False
    return True


# -- actions -------------------------------------------------------------------------------------


def start_rollout(args: argparse.Namespace) -> int:
    from shared.ablog.times import iso_time
    from shared.errors import ScoreError

    controller = _controller(args)
    read = _read(controller, args.endpoint)
    if read is None:
        return 1
    stored, ep, current = read
    if current is not None and current.active:
        print(f"endpoint {args.endpoint!r} has a rollout {current.state.status} already "
              f"(abort it first)", file=sys.stderr)
        return 1
    control = args.control or _only_weighted(ep)
    if control is None:
        print("more than one variant has weight: name the control with --control", file=sys.stderr)
        return 1
    try:
        steps = [float(s) for s in args.steps.split(",")]
    except ValueError:
        print("--steps: a comma-separated list of percents, e.g. 5,25,50", file=sys.stderr)
        return 1
    steps = [int(s) if s.is_integer() else s for s in steps]
    if (args.metric is None) != (args.min_effect is None):
        print("--metric and --min-effect go together", file=sys.stderr)
        return 1
    print(f"checking model {args.model} ... ", end="", flush=True)
    try:
        info = controller.store.get(args.model)[0].info
    except ScoreError as exc:
        print(exc.code)
        print(f"model {args.model!r}: {exc.message}", file=sys.stderr)
        return 1
    print(f"ok: version {info.version}")
    now = time.time()
    document = json.loads(json.dumps(stored.document))
    doc_ep = document["endpoints"][args.endpoint]
    variants = [v for v in doc_ep["variants"] if v["name"] != args.candidate]
    weights = {control: 100 - steps[0], args.candidate: steps[0]}
    for v in variants:
        if v["name"] == control:
            v["weight"] = weights[control]
        elif v["weight"]:
            print(f"variant {v['name']!r} has weight {v['weight']}: a rollout splits traffic "
                  f"between control and candidate only", file=sys.stderr)
            return 1
    variants.append({"name": args.candidate, "model": args.model, "weight": steps[0]})
    doc_ep["variants"] = variants
    block: dict[str, Any] = {
        "control": control, "candidate": args.candidate, "steps": steps,
        "min_minutes": args.min_minutes, "min_requests": args.min_requests,
        "max_hours": args.max_hours,
        "guardrails": {"max_error_rate_increase": args.max_error_rate_increase,
                       "max_p99_ratio": args.max_p99_ratio},
        "promote": args.promote,
        "state": {"status": "running", "step": 0, "started": iso_time(now),
                  "step_started": iso_time(now), "weights": weights,
                  "reason": "started by a person"}}
    if args.max_prediction_shift is not None:
        block["guardrails"]["max_prediction_shift"] = args.max_prediction_shift
    if args.metric is not None:
        block["decision"] = {"metric": args.metric, "min_effect": args.min_effect,
                             "alpha": args.alpha}
    doc_ep["rollout"] = block
    if "log" not in doc_ep:
        doc_ep["log"] = {"sample": 1.0}
        print("the endpoint had no prediction log: logging every request (the controller "
              "judges from the log)")
    if not _write(controller, stored, document):
        return 1
    print(f"rollout of {args.endpoint} started: {args.candidate} ({args.model}) gets "
          f"{steps[0]:g}%, then {', '.join(f'{s:g}%' for s in steps[1:]) or 'promotion'}")
    return 0


def show_status(args: argparse.Namespace) -> int:
    from shared.ablog.times import iso_time

    controller = _controller(args)
    read = _read(controller, args.endpoint)
    if read is None:
        return 1
    stored, ep, rollout = read
    if rollout is None:
        print(f"endpoint {args.endpoint!r} has no rollout")
        return 0
    state = rollout.state
    print(f"rollout of {args.endpoint}: {rollout.candidate} against {rollout.control}, "
          f"status {state.status}" + (f" ({state.reason})" if state.reason else ""))
    if state.status != "pending":
        share = rollout.share(state.step)
        since = (time.time() - state.step_started) / 60 if state.step_started else 0
        steps = ", ".join(f"{s:g}" for s in rollout.steps)
        print(f"  step {state.step + 1} of {len(rollout.steps)} ({steps}%): "
              f"candidate share {share:g}%, {since:.0f} min in this step "
              f"(at least {rollout.min_minutes:g} min and {rollout.min_requests} requests per variant)")
    if rollout.active and state.status != "paused":
        decision = controller.evaluate(args.endpoint, ep, rollout, time.time())
        figures = decision.figures
        for role in ("control", "candidate"):
            f = figures.get(role)
            if f:
                p99 = "-" if f["p99_ms"] is None else f"{f['p99_ms']:.2f} ms"
                print(f"  {role:<9s} requests {f['requests']:>7d}  failures {f['failures']:>5d}  "
                      f"p99 {p99}")
        print(f"  {'guardrail':<24s} {'value':>10s} {'limit':>8s}  verdict")
        for check in decision.checks:
            value = "-" if check.value != check.value else f"{check.value:.4g}"
            verdict = {True: "pass", False: "BREACHED", None: "not judged yet"}[check.passed]
            print(f"  {check.name:<24s} {value:>10s} {check.limit:>8g}  {verdict}")
        if rollout.decision is not None:
            if decision.interval is not None:
                low, high = decision.interval
                print(f"  outcomes: {rollout.decision.metric} candidate - control in "
                      f"[{low:.4g}, {high:.4g}] (always-valid {1 - rollout.decision.alpha:.0%}); "
                      f"verdict {decision.verdict}; smallest effect that matters "
                      f"{rollout.decision.min_effect:g}")
            else:
                print("  outcomes: none joined yet")
        print(f"  next: {decision.action} - {decision.reason}")
        print(f"  when: {_next_run(app_settings().rollout_schedule)}")
    history = controller.audit.read(args.endpoint)
    moves = [h for h in history if h.get("action") != "hold"][-args.history:]
    if moves:
        print("  history:")
        for h in moves:
            print(f"    {h['time'][:19]}  {h['action']:<8s} at {h['share']:g}%  {h['reason']}")
    print(f"  config version {str(stored.etag).strip(chr(34))}, read {iso_time(time.time())[:19]}")
    return 0


def change_status(args: argparse.Namespace) -> int:
    from shared.rollout.apply import set_state

    controller = _controller(args)
    read = _read(controller, args.endpoint)
    if read is None:
        return 1
    stored, ep, rollout = read
    if rollout is None or not rollout.active:
        print(f"endpoint {args.endpoint!r} has no active rollout", file=sys.stderr)
        return 1
    weights_now = {v.name: v.weight for v in ep.variants
                   if v.name in (rollout.control, rollout.candidate)}
    document = set_state(stored.document, args.endpoint, rollout, status=args.status,
                         reason=args.reason, now=time.time(), weights_now=weights_now)
    if not _write(controller, stored, document):
        return 1
    state = document["endpoints"][args.endpoint]["rollout"]["state"]
    print(f"rollout of {args.endpoint}: {args.status}; weights "
          f"{', '.join(f'{k} {v:g}' for k, v in state.get('weights', {}).items())}")
    return 0


def _next_run(schedule: str) -> str:
    """When the controller runs next, by the app's ``ROLLOUT_SCHEDULE`` (UTC)."""
    from datetime import UTC, datetime

    from devhost.ncrontab import ScheduleError, parse_schedule

    try:
        at = parse_schedule(schedule).next_after(datetime.now(UTC))
    except (ScheduleError, AttributeError, TypeError):
        return f"at the controller's next run (ROLLOUT_SCHEDULE {schedule!r})"
    return f"the controller's next run, {at:%H:%M:%S} UTC (ROLLOUT_SCHEDULE {schedule!r})"


def _only_weighted(ep: Any) -> str | None:
    weighted = [v.name for v in ep.variants if v.weight > 0]
    return weighted[0] if len(weighted) == 1 else None
