"""The rollout controller's timer: every ``%ROLLOUT_SCHEDULE%`` (NCRONTAB; default every five
minutes) it evaluates the rollouts of the router config blob, nothing else (see
shared/rollout/controller.py).

The host runs a timer function on one instance at a time (a blob lease in
``AzureWebJobsStorage``); the controller's conditional write makes a second run that overlaps
anyway change nothing. A run that raises (storage down) changed nothing: the next occurrence
tries again.
"""

from __future__ import annotations

import logging

import azure.functions as func

bp = func.Blueprint()
log = logging.getLogger("scorefn.rollout")


@bp.timer_trigger(arg_name="timer", schedule="%ROLLOUT_SCHEDULE%", run_on_startup=False,
                  use_monitor=True)
def rollout_controller(timer: func.TimerRequest) -> None:
    """Evaluate every active rollout: advance, hold, promote, roll back or pause it."""
    from shared.app import get_app

    controller = get_app().rollouts
    if controller is None:
        return  # no ROUTER_CONFIG_BLOB: no config the controller could write
    if timer.past_due:
        log.info("rollouts: this run is late (the app was stopped or busy)")
    controller.run()
