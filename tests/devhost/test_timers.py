"""Timer triggers run with the Functions host's semantics (the timer extension's TimerListener
and StorageScheduleMonitor).

The sample app's ``tick`` function takes its schedule, runOnStartup and useMonitor from
SAMPLE_TIMER_* settings and records each run as blobs under SAMPLE_TIMER_TOKEN/ (see
``sample_app/sample_routes.py``). The runner's timing (no overlap, no backlog of missed
occurrences) is also checked in-process against a recording invoker, where it can be measured
to the tenth of a second.
"""

import asyncio
import json
import logging
import math
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from azure.storage.blob import BlobServiceClient

from devhost.app_index import TimerFunction
from devhost.invocation import DEFAULT_TIME, InvocationFailed, Invoker, ScheduleStatus, TimerCall
from devhost.ncrontab import parse_schedule
from devhost.schedule_monitor import HOSTS_CONTAINER, check_past_due, host_id
from devhost.timer_runner import TimerRunner

from .conftest import MASTER_KEY, SAMPLE_APP, WORKERS, unique, wait_for

EVERY_SECOND = "*/1 * * * * *"


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def runs(container, token: str, stage: str = "done") -> list[dict]:
    """The runs ``tick`` recorded for ``token`` ("started" or "done"), oldest first."""
    found = [json.loads(container.download_blob(b.name).readall())
             for b in container.list_blobs(name_starts_with=f"{token}/")
             if b.name.endswith(f"-{stage}")]
    return sorted(found, key=lambda doc: doc["started"])


def timer_env(sample_env, **settings: str) -> tuple[dict[str, str], str]:
    token = uuid.uuid4().hex
    return {**sample_env, "SAMPLE_TIMER_TOKEN": token, **settings}, token


# -- the schedule status, as the host's ScheduleMonitor reads it at start-up -------------------

FIVE_MINUTES = parse_schedule("0 */5 * * * *")


def test_a_timer_never_recorded_is_not_past_due_and_gets_a_first_record():
    now = at(2024, 5, 1, 12, 1, 30)
    check = check_past_due(None, FIVE_MINUTES, now)
    assert not check.past_due
    assert check.store == ScheduleStatus(DEFAULT_TIME, at(2024, 5, 1, 12, 5), now)
    assert check.status == ScheduleStatus(DEFAULT_TIME, at(2024, 5, 1, 12, 5), DEFAULT_TIME)


def test_a_recorded_occurrence_that_has_passed_is_past_due():
    recorded = ScheduleStatus(at(2024, 5, 1, 11, 50), at(2024, 5, 1, 11, 55), at(2024, 5, 1, 11, 50))
    check = check_past_due(recorded, FIVE_MINUTES, at(2024, 5, 1, 12, 1))
    assert check.past_due and check.status == recorded and check.store is None
    upcoming = check_past_due(recorded, FIVE_MINUTES, at(2024, 5, 1, 11, 54))
    assert not upcoming.past_due and upcoming.store is None


def test_a_changed_schedule_is_recomputed_from_now_and_never_past_due():
    # Recorded under a daily schedule; the next occurrence does not follow from the last run
    # under the five-minute one.
    recorded = ScheduleStatus(at(2024, 5, 1, 0, 0), at(2024, 5, 2, 0, 0), at(2024, 5, 1, 0, 0))
    now = at(2024, 5, 1, 12, 1)
    check = check_past_due(recorded, FIVE_MINUTES, now)
    assert not check.past_due
    assert check.store == check.status == ScheduleStatus(DEFAULT_TIME, at(2024, 5, 1, 12, 5), now)


def test_a_timer_that_never_ran_counts_from_its_last_update():
    recorded = ScheduleStatus(DEFAULT_TIME, at(2024, 5, 1, 11, 55), at(2024, 5, 1, 11, 51))
    assert check_past_due(recorded, FIVE_MINUTES, at(2024, 5, 1, 12, 0, 1)).past_due


def test_the_status_is_kept_as_json_net_writes_it_and_read_back():
    status = ScheduleStatus(DEFAULT_TIME, at(2024, 5, 1, 12, 5),
                            datetime(2024, 5, 1, 12, 1, 30, 250000, tzinfo=UTC))
    doc = status.to_json()
    assert doc == {"Last": "0001-01-01T00:00:00+00:00", "Next": "2024-05-01T12:05:00+00:00",
                   "LastUpdated": "2024-05-01T12:01:30.25+00:00"}
    assert ScheduleStatus.from_json(doc) == status
    # The host writes seven fraction digits and its local offset.
    assert ScheduleStatus.from_json({"Last": "2024-05-01T05:00:00.1234567-07:00"}).last == \
        datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_the_host_id_is_the_setting_or_derived_from_the_machine_and_folder(tmp_path):
    assert host_id({"AzureFunctionsWebHost__hostid": "my-app"}, tmp_path) == "my-app"
    derived = host_id({}, tmp_path)
    assert derived == derived.lower() and 0 < len(derived) <= 32 and not derived.endswith("-")
    assert derived != host_id({}, tmp_path / "other")


def test_the_trigger_value_is_the_hosts_timer_info():
    from devhost.invocation import TraceContext

    status = ScheduleStatus(at(2024, 5, 1, 12, 0), at(2024, 5, 1, 12, 5), at(2024, 5, 1, 12, 0))
    call = TimerCall(past_due=True, schedule_status=status, adjust_for_dst=True,
                     trace_context=TraceContext("00-" + "1" * 32 + "-" + "2" * 16 + "-00", "", {}))
    assert json.loads(call.timer_info()) == {
        "Schedule": {"AdjustForDST": True}, "IsPastDue": True,
        "ScheduleStatus": {"Last": "2024-05-01T12:00:00+00:00",
                           "Next": "2024-05-01T12:05:00+00:00",
                           "LastUpdated": "2024-05-01T12:00:00+00:00"}}
    unmonitored = TimerCall(False, None, False, call.trace_context)
    assert json.loads(unmonitored.timer_info())["ScheduleStatus"] is None


# -- the runner's timing, measured in-process ------------------------------------------------

class RecordingInvoker(Invoker):
    """Records each timer run's (start, end, call); runs last as long as ``durations`` says
    (in order; then no time) and fail while ``failing`` is set."""

    def __init__(self, durations=(), failing=False) -> None:
        super().__init__()
        self.durations, self.failing = list(durations), failing
        self.runs: list[tuple[float, float, TimerCall]] = []

    async def _timer(self, function, call):
        started = time.time()
        await asyncio.sleep(self.durations.pop(0) if self.durations else 0)
        self.runs.append((started, time.time(), call))
        if self.failing:
            raise InvocationFailed("id-failed", "RuntimeError: asked to fail")
        return "id"


def timer(schedule=EVERY_SECOND, *, run_on_startup=False) -> TimerFunction:
    return TimerFunction(name="tick", binding_name="timer", function_id=None, user_function=None,
                         wants_context=False, is_async=False, schedule=parse_schedule(schedule),
                         run_on_startup=run_on_startup, use_monitor=False)


def run_for(seconds: float, invoker: Invoker, function: TimerFunction,
            stop_timeout: float = 10.0) -> bool:
    """Run a TimerRunner for ``seconds``, then stop it; whether all its runs finished."""
    async def main() -> bool:
        runner = TimerRunner([function], invoker, monitor=None)
        await runner.start()
        await asyncio.sleep(seconds)
        return await runner.stop(stop_timeout)

    return asyncio.run(main())


def fraction(t: float) -> float:
    return t - math.floor(t)


def test_runs_fire_at_each_occurrence_and_never_overlap_nor_pile_up():
    # Every second; the first run takes 2.3 s. The occurrences passing meanwhile are not queued:
    # one run follows at once (late, not past due), then the schedule resumes on the second.
    invoker = RecordingInvoker(durations=[2.3])
    assert run_for(4.9, invoker, timer())
    (s1, e1, first), (s2, e2, second), (s3, _, third), *_ = invoker.runs
    assert fraction(s1) < 0.3  # on the second
    assert 0 <= s2 - e1 < 0.3  # at once after the long run
    assert 0.4 < s3 - s2 < 1.0 and fraction(s3) < 0.3  # the next second, not at once again
    assert all(start >= end for (_, end, _), (start, _, _) in zip(invoker.runs, invoker.runs[1:]))
    assert not any(call.past_due for _, _, call in invoker.runs)
    assert all(call.schedule_status is None for _, _, call in invoker.runs)  # not monitored


def test_run_on_startup_runs_at_once_then_the_schedule_follows():
    invoker = RecordingInvoker()
    started = time.time()
    assert run_for(1.5, invoker, timer("0 0 0 1 1 *", run_on_startup=True))
    [(s1, _, call)] = invoker.runs  # the yearly occurrence is far away
    assert s1 - started < 0.3 and not call.past_due


def test_a_failed_run_is_logged_and_the_schedule_goes_on(caplog):
    invoker = RecordingInvoker(failing=True)
    with caplog.at_level(logging.ERROR, logger="devhost.timers"):
        assert run_for(2.6, invoker, timer())
    assert len(invoker.runs) >= 2
    assert caplog.text.count("Executed 'Functions.tick' (Failed, Id=id-failed)") == \
        len(invoker.runs)


def test_stopping_waits_for_the_run_in_progress_or_gives_up_after_the_timeout(caplog):
    invoker = RecordingInvoker(durations=[1.0])
    assert run_for(0.2, invoker, timer("0 0 0 1 1 *", run_on_startup=True))
    assert len(invoker.runs) == 1  # it finished before stop returned
    slow = RecordingInvoker(durations=[5.0])
    with caplog.at_level(logging.ERROR, logger="devhost.timers"):
        assert not run_for(0.2, slow, timer("0 0 0 1 1 *", run_on_startup=True),
                           stop_timeout=0.3)
    assert "SHUTDOWN INCOMPLETE: timer function(s) tick still running" in caplog.text


# -- the sample app's timer in a devhost, against Azurite -----------------------------------

def test_a_timer_runs_on_its_schedule_and_a_failure_does_not_stop_it(
        sample_env, start_host, results_container):
    env, token = timer_env(sample_env, SAMPLE_TIMER_SCHEDULE=EVERY_SECOND,
                           SAMPLE_TIMER_FAIL="true")
    host = start_host(env, queues=False)
    started = wait_for(lambda: len(runs(results_container, token, "started")) >= 3 and
                       runs(results_container, token, "started"), timeout=15)
    assert httpx.get(f"{host.url}/api/text").text == "plain"  # still serving
    assert host.stop() == 0
    assert runs(results_container, token) == []  # every run failed
    log = host.log_path.read_text()
    assert log.count("Executed 'Functions.tick' (Failed") >= 3
    assert "RuntimeError: asked to fail" in log
    first, second, third = started[:3]
    assert [round(b["started"] - a["started"]) for a, b in [(first, second), (second, third)]] \
        == [1, 1]  # one run each second
    assert all(fraction(run["started"]) < 0.5 for run in started)  # at the second
    assert all((run["past_due"], run["schedule_status"], run["schedule"]) ==
               (False, {}, {"AdjustForDST": True}) for run in started)  # sub-minute: no monitor


def test_runs_of_a_timer_never_overlap(sample_env, start_host, results_container):
    # Each run takes 1.5 s: the next second's occurrence passes while the first one runs.
    env, token = timer_env(sample_env, SAMPLE_TIMER_SCHEDULE=EVERY_SECOND,
                           SAMPLE_TIMER_SECONDS="1.5")
    host = start_host(env, queues=False)
    done = wait_for(lambda: len(runs(results_container, token)) >= 2 and
                    runs(results_container, token), timeout=15)
    host.stop()
    assert all(later["started"] >= earlier["finished"]
               for earlier, later in zip(done, done[1:]))


def test_run_on_startup_runs_once_at_start_and_stopping_waits_for_it(
        sample_env, start_host, results_container):
    env, token = timer_env(sample_env, SAMPLE_TIMER_RUN_ON_STARTUP="true",
                           SAMPLE_TIMER_SECONDS="2")
    host = start_host(env, queues=False)
    wait_for(lambda: runs(results_container, token, "started"), timeout=10)
    assert host.stop() == 0  # waited for the run in progress
    [run] = runs(results_container, token)
    assert not run["past_due"] and run["finished"] - run["started"] >= 2
    assert "Function 'tick' is configured to run on startup. Executing now." in \
        host.log_path.read_text()


def test_a_missed_occurrence_runs_at_start_up_as_past_due(
        azurite, sample_env, start_host, results_container):
    # The host was down when 12:55 was due (say): its record says the run of 12:50 was the last.
    hosts = BlobServiceClient.from_connection_string(azurite.connection_string) \
        .get_container_client(HOSTS_CONTAINER)
    host_name = unique("devhost")
    now = datetime.now(UTC)
    last = now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0) \
        - timedelta(minutes=10)
    missed = last + timedelta(minutes=5)
    recorded = ScheduleStatus(last, missed, last).to_json()
    status_blob = f"timers/{host_name}/Host.Functions.tick/status"
    if not hosts.exists():
        hosts.create_container()
    hosts.upload_blob(status_blob, json.dumps(recorded), overwrite=True)

    env, token = timer_env(sample_env, SAMPLE_TIMER_SCHEDULE="0 */5 * * * *",
                           SAMPLE_TIMER_USE_MONITOR="true",
                           AzureFunctionsWebHost__hostid=host_name)
    host = start_host(env, queues=False)
    [run] = wait_for(lambda: runs(results_container, token), timeout=10)
    assert run["past_due"] and run["schedule_status"] == recorded
    assert "Function 'tick' is past due on startup. Executing now." in host.log_path.read_text()

    def updated():
        status = ScheduleStatus.from_json(json.loads(hosts.download_blob(status_blob).readall()))
        return status if status.last > last else None

    status = wait_for(updated, timeout=5)
    assert abs(status.last.timestamp() - run["started"]) < 2
    assert status.next == FIVE_MINUTES.next_after(status.last) and status.next > now


@pytest.fixture(scope="module", params=WORKERS)
def admin_host(request, sample_env, tmp_path_factory):
    from devhost.process import DevHost

    env, token = timer_env(sample_env)
    log = tmp_path_factory.mktemp("timers") / "devhost.log"
    with DevHost(SAMPLE_APP, env, queues=False, log_path=log, worker=request.param) as host:
        yield host, token


def admin_post(host, name: str, body: bytes | None = b'{"input": ""}', key=MASTER_KEY,
               content_type="application/json") -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    if key:
        headers["x-functions-key"] = key
    return httpx.post(f"{host.url}/admin/functions/{name}", content=body, headers=headers)


def test_the_admin_api_runs_a_timer_function_now(admin_host, results_container):
    host, token = admin_host
    before = len(runs(results_container, token))
    assert admin_post(host, "tick").status_code == 202
    assert admin_post(host, "TICK", b"{}").status_code == 202  # names match in any case
    done = wait_for(lambda: len(runs(results_container, token)) >= before + 2 and
                    runs(results_container, token), timeout=10)
    assert all((run["past_due"], run["schedule_status"], run["schedule"]) ==
               (False, {}, {"AdjustForDST": True}) for run in done)


@pytest.mark.parametrize("name, body, key, content_type, status", [
    ("tick", b'{"input": ""}', None, "application/json", 401),  # the master key is needed
    ("tick", b'{"input": ""}', "test-function-key", "application/json", 401),
    ("tick", b"", MASTER_KEY, None, 400),  # no body
    ("tick", b"[1]", MASTER_KEY, "application/json", 400),  # not an object
    ("tick", b"{", MASTER_KEY, "application/json", 400),
    ("tick", b'{"input": ""}', MASTER_KEY, "text/plain", 415),
    ("nope", b'{"input": ""}', MASTER_KEY, "application/json", 404),
    ("echo", b'{"input": ""}', MASTER_KEY, "application/json", 501),  # not a timer function
])
def test_the_admin_api_answers_as_the_host_does(admin_host, name, body, key, content_type,
                                                status):
    host, _ = admin_host
    assert admin_post(host, name, body, key, content_type).status_code == status


def test_admin_routes_are_not_function_routes(admin_host):
    host, _ = admin_host
    headers = {"x-functions-key": MASTER_KEY}
    assert httpx.get(f"{host.url}/admin/functions/tick", headers=headers).status_code == 404
    assert httpx.post(f"{host.url}/api/admin/functions/tick", headers=headers).status_code == 404
