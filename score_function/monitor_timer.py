"""The drift evaluation's timer: every ``%MONITOR_SCHEDULE%`` (NCRONTAB; default ten minutes
past every hour) it compares each endpoint's served counts of the last
``MONITOR_WINDOW_HOURS`` with the models' reference profiles and between variants, records
the ``scorefn.drift.*`` metrics and writes a summary blob (see shared/monitoring/evaluate.py).

The host runs a timer function on one instance at a time; a run that fails for an endpoint
logs it and goes on with the others, and the next occurrence evaluates again.
"""

from __future__ import annotations

import logging

import azure.functions as func

bp = func.Blueprint()
log = logging.getLogger("scorefn.monitor")


@bp.timer_trigger(arg_name="timer", schedule="%MONITOR_SCHEDULE%", run_on_startup=False,
                  use_monitor=True)
def drift_evaluation(timer: func.TimerRequest) -> None:
    """Evaluate drift for every endpoint with served counts in the window."""
    from shared.app import get_app

    monitor = get_app().drift
    if monitor is None:
        return  # MONITOR_ENABLED=false
    summaries = monitor.run()
    log.info("drift evaluated for %d endpoint(s)", len(summaries),
             extra={"endpoints": len(summaries)})
