"""Timer triggers with the host's semantics (the timer extension's ``TimerListener``).

Each timer function has one loop: it waits for the schedule's next occurrence, runs the function
and only then computes the next occurrence, from the occurrence just run. So runs of one
function never overlap: occurrences that pass while the function runs are not queued up; if
the next one has already passed when the run ends, the function runs once more at once (not
past due), and the schedule goes on from that run's time. A failed run is logged and not
retried; the schedule goes on.

At start-up a monitored timer (see ``schedule_monitor.py``) whose recorded next occurrence has
passed runs at once with ``past_due`` set; otherwise a ``run_on_startup`` timer runs at once.
:meth:`TimerRunner.trigger` runs a timer function now (the admin API's ``POST
/admin/functions/{name}``), as the host does: outside the loop, so it may overlap a scheduled
run, with ``past_due`` false and the recorded status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .app_index import TimerFunction
from .invocation import (
    DEFAULT_TIME,
    InvocationFailed,
    Invoker,
    ScheduleStatus,
    TimerCall,
    TraceContext,
    new_traceparent,
)
from .ncrontab import NEVER
from .schedule_monitor import StorageScheduleMonitor, check_past_due

log = logging.getLogger("devhost.timers")
NEXT_OCCURRENCES_LOGGED = 5  # as the host logs them at start-up
_UTC_NAMES = {"utc", "etc/utc", "coordinated universal time"}


def utc_now() -> datetime:
    return datetime.now(UTC)


class TimerRunner:
    """Runs the timer functions on their schedules through ``invoker``; ``monitor`` keeps the
    schedule status of the monitored ones (None: none is monitored)."""

    def __init__(self, functions: list[TimerFunction], invoker: Invoker,
                 monitor: StorageScheduleMonitor | None) -> None:
        self.invoker, self.monitor = invoker, monitor
        self.stopping = asyncio.Event()
        self._timers = {f.name.casefold(): _Timer(self, f) for f in functions}
        self._loops: list[asyncio.Task[None]] = []
        self._manual: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, functions: list[TimerFunction], invoker: Invoker,
                      env: Mapping[str, str], app_dir: Path) -> TimerRunner:
        """A runner with the host's storage as the schedule monitor when a timer is monitored."""
        zone = next((v for k, v in env.items() if k.casefold() == "website_time_zone"), "")
        if zone.strip() and zone.strip().casefold() not in _UTC_NAMES:
            log.warning("WEBSITE_TIME_ZONE=%r is ignored: devhost runs timer schedules in UTC",
                        zone)
        monitored = any(f.use_monitor for f in functions)
        monitor = StorageScheduleMonitor.from_settings(env, app_dir) if monitored else None
        return cls(functions, invoker, monitor)

    async def start(self, timeout: float = 10.0) -> None:
        """Start each timer: read its recorded status (monitored timers), then run it at once
        when past due or ``run_on_startup``, and on its schedule. Waits at most ``timeout``
        seconds for the status reads (storage may be down); the timers start anyway."""
        self._loops = [asyncio.create_task(t.run()) for t in self._timers.values()]
        started = [asyncio.ensure_future(t.started.wait()) for t in self._timers.values()]
        if started:
            _, pending = await asyncio.wait(started, timeout=timeout)
            for waiter in pending:
                waiter.cancel()
            if pending:
                log.warning("could not read the timers' schedule status yet; they start when "
                            "storage answers")

    def trigger(self, name: str) -> bool:
        """Run the timer function called ``name`` (in any case) now, in the background; False
        when there is no such timer function."""
        timer = self._timers.get(name.casefold())
        if timer is None:
            return False
        task = asyncio.create_task(timer.run_now())
        self._manual.add(task)
        task.add_done_callback(self._manual.discard)
        return True

    async def stop(self, timeout: float, abandon: asyncio.Event | None = None) -> bool:
        """Stop scheduling and wait for the runs in progress, as the host's StopAsync does, but
        at most ``timeout`` seconds (or until ``abandon`` is set). True when all finished."""
        self.stopping.set()
        tasks = [*self._loops, *self._manual]
        finished = await _wait_all(tasks, timeout, abandon)
        if not finished:
            running = sorted(t.function.name for t in self._timers.values() if t.running)
            log.error("SHUTDOWN INCOMPLETE: timer function(s) %s still running after %.0f s; "
                      "abandoning them", ", ".join(running) or "(admin API runs)", timeout)
        for task in tasks:
            task.cancel()
        return finished

    async def invoke(self, function: TimerFunction, call: TimerCall) -> None:
        """One run; a failure is logged, never raised."""
        started = time.perf_counter()
        try:
            invocation_id = await self.invoker.invoke_timer(function, call)
        except InvocationFailed as exc:
            log.error("Executed 'Functions.%s' (Failed, Id=%s)\n%s", function.name,
                      exc.invocation_id, exc.detail)
            return
        log.debug("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%.0fms)", function.name,
                  invocation_id, (time.perf_counter() - started) * 1000)

    async def stopped_within(self, seconds: float) -> bool:
        """Wait ``seconds``; True as soon as the runner is stopping."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True


class _Timer:
    """One timer function's schedule loop and status."""

    def __init__(self, runner: TimerRunner, function: TimerFunction) -> None:
        self.runner, self.function = runner, function
        self.monitor = runner.monitor if function.use_monitor else None
        self.status = ScheduleStatus(DEFAULT_TIME, DEFAULT_TIME, DEFAULT_TIME)
        self.started = asyncio.Event()
        self.running = False

    async def run(self) -> None:
        name, runner = self.function.name, self.runner
        try:
            past_due = await self._initial_status()
        finally:
            self.started.set()
        self._log_next_occurrences()
        if past_due:
            log.info("Function '%s' is past due on startup. Executing now.", name)
            await self._fire(unscheduled=True, past_due=True)
        elif self.function.run_on_startup:
            log.info("Function '%s' is configured to run on startup. Executing now.", name)
            await self._fire(unscheduled=True)
        while not runner.stopping.is_set():
            delay = (self.status.next - utc_now()).total_seconds()
            if delay > 0 and await runner.stopped_within(delay):
                return
            try:
                await self._fire()
            except Exception:  # the host logs and keeps the schedule going
                log.exception("Error occurred during scheduled invocation for '%s'.", name)
                await runner.stopped_within(1.0)

    async def _initial_status(self) -> bool:
        """Set the status the schedule starts from; True when the timer is past due."""
        now, schedule = utc_now(), self.function.schedule
        self.status = ScheduleStatus(DEFAULT_TIME, schedule.next_after(now), DEFAULT_TIME)
        if self.monitor is None:
            return False
        try:
            recorded = await self.monitor.get(self.function.name)
        except Exception as exc:
            log.error("Function '%s': its schedule status cannot be read (%s: %s); missed "
                      "occurrences are not checked for", self.function.name, type(exc).__name__,
                      exc)
            return False
        check = check_past_due(recorded, schedule, now)
        if check.store is not None:
            await self.monitor.update(self.function.name, check.store)
        self.status = check.status
        return check.past_due

    async def _fire(self, *, unscheduled: bool = False, past_due: bool = False) -> None:
        """Run the function once, then compute the next occurrence from this run."""
        if self.runner.stopping.is_set():
            return
        invoked_at = utc_now()
        self.running = True
        try:
            await self.runner.invoke(self.function, self._call(past_due, self.status))
        finally:
            self.running = False
        # A scheduled run that fired a little early counts as the occurrence it was for, so
        # that the next occurrence is never that one again.
        basis = invoked_at if unscheduled else max(invoked_at, self.status.next)
        schedule = self.function.schedule
        self.status = ScheduleStatus(last=basis, next=schedule.next_after(basis),
                                     last_updated=basis)
        if self.monitor is not None:
            await self.monitor.update(self.function.name, self.status)

    async def run_now(self) -> None:
        """A run through the admin API: the recorded status (monitored timers), never past due."""
        status = None
        if self.runner.stopping.is_set():
            log.warning("Function '%s' called through the admin API while the host stops: not "
                        "run", self.function.name)
            return
        log.info("Function '%s' called through the admin API. Executing now.", self.function.name)
        try:
            if self.monitor is not None:
                status = await self.monitor.get(self.function.name)
        except Exception as exc:
            log.error("Executed 'Functions.%s' (Failed: its schedule status cannot be read: "
                      "%s: %s)", self.function.name, type(exc).__name__, exc)
            return
        await self.runner.invoke(self.function, self._call(False, status))

    def _call(self, past_due: bool, status: ScheduleStatus | None) -> TimerCall:
        return TimerCall(past_due=past_due,
                         schedule_status=status if self.monitor is not None else None,
                         adjust_for_dst=self.function.schedule.adjust_for_dst,
                         trace_context=TraceContext(new_traceparent(), "",
                                                    {"OperationName": self.function.name}))

    def _log_next_occurrences(self) -> None:
        schedule, moment = self.function.schedule, utc_now()
        upcoming: list[str] = []
        for _ in range(NEXT_OCCURRENCES_LOGGED):
            moment = schedule.next_after(moment)
            if moment >= NEVER:
                upcoming.append("never")
                break
            upcoming.append(moment.strftime("%Y-%m-%dT%H:%M:%SZ"))
        log.info("The next %d occurrences of the '%s' schedule (%s) will be: %s",
                 NEXT_OCCURRENCES_LOGGED, self.function.name, schedule, ", ".join(upcoming))


async def _wait_all(tasks: list[asyncio.Task[Any]], timeout: float,
                    abandon: asyncio.Event | None) -> bool:
    """Wait until all ``tasks`` are done, ``timeout`` seconds pass or ``abandon`` is set; True
    when all are done. The tasks are not cancelled here."""
    if not tasks:
        return True
    waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(asyncio.wait(tasks))}
    if abandon is not None:
        waiters.add(asyncio.ensure_future(abandon.wait()))
    await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
    return all(task.done() for task in tasks)
