"""Timer schedules are read and stepped through as the host's NCrontab does it."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from devhost.ncrontab import (
    NEVER,
    CronSchedule,
    IntervalSchedule,
    ScheduleError,
    parse_cron,
    parse_schedule,
)


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def occurrences(expression: str, start: datetime, count: int) -> list[datetime]:
    schedule, found = parse_schedule(expression), []
    for _ in range(count):
        start = schedule.next_after(start)
        found.append(start)
    return found


@pytest.mark.parametrize("expression, start, expected", [
    # every five minutes, strictly after the moment given
    ("0 */5 * * * *", at(2024, 5, 1, 12, 34, 56), at(2024, 5, 1, 12, 35)),
    ("0 */5 * * * *", at(2024, 5, 1, 12, 35), at(2024, 5, 1, 12, 40)),
    ("0 */5 * * * *", at(2024, 12, 31, 23, 58), at(2025, 1, 1, 0, 0)),
    # 9:30 on weekdays: Friday's is followed by Monday's
    ("0 30 9 * * 1-5", at(2024, 5, 3, 9, 30), at(2024, 5, 6, 9, 30)),
    ("0 30 9 * * 1-5", at(2024, 5, 4, 8, 0), at(2024, 5, 6, 9, 30)),
    ("0 30 9 * * 1-5", at(2024, 5, 6, 9, 29, 59), at(2024, 5, 6, 9, 30)),
    # every ten seconds; the fraction of the second given is ignored
    ("*/10 * * * * *", datetime(2024, 5, 1, 12, 34, 56, 500000, tzinfo=UTC), at(2024, 5, 1, 12, 35)),
    ("*/10 * * * * *", datetime(2024, 5, 1, 12, 34, 50, 999999, tzinfo=UTC), at(2024, 5, 1, 12, 35)),
    # months without the day are skipped; 29 February waits for a leap year
    ("0 0 0 31 * *", at(2024, 1, 31), at(2024, 3, 31)),
    ("0 0 0 31 * *", at(2024, 4, 1), at(2024, 5, 31)),
    ("0 0 12 29 2 *", at(2023, 3, 1), at(2024, 2, 29, 12)),
    # the day must match the day of the month AND the day of the week (Vixie cron takes
    # either: it would answer Friday 5 January)
    ("0 0 0 13 * Fri", at(2024, 1, 1), at(2024, 9, 13)),
    # the documentation's "at 9:30 AM every Monday in January"
    ("0 30 9 * Jan Mon", at(2024, 1, 1, 10), at(2024, 1, 8, 9, 30)),
    ("0 30 9 * Jan Mon", at(2024, 1, 29, 10), at(2025, 1, 6, 9, 30)),
    # five fields: no seconds field, the seconds are 0
    ("30 9 * * Mon", at(2024, 5, 6, 9, 30), at(2024, 5, 13, 9, 30)),
])
def test_next_occurrences(expression, start, expected):
    assert parse_schedule(expression).next_after(start) == expected


def test_a_schedule_steps_through_its_occurrences():
    assert occurrences("0 0 8,12-14 * * *", at(2024, 5, 1, 12, 30), 4) == [
        at(2024, 5, 1, 13), at(2024, 5, 1, 14), at(2024, 5, 2, 8), at(2024, 5, 2, 12)]
    assert occurrences("*/1 * * * * *", at(2024, 5, 1, 23, 59, 58), 3) == [
        at(2024, 5, 1, 23, 59, 59), at(2024, 5, 2), at(2024, 5, 2, 0, 0, 1)]


@pytest.mark.parametrize("field, allowed", [
    ("5/20", (5, 25, 45)),  # from a value to the maximum, stepped
    ("1-10/3", (1, 4, 7, 10)),
    ("10-1", tuple(range(1, 11))),  # a reversed range is swapped, as NCrontab does
    ("*/0", tuple(range(60))),  # a step below 1 counts as 1
    ("0,30,15-16", (0, 15, 16, 30)),
])
def test_fields_are_read_as_ncrontab_reads_them(field, allowed):
    assert parse_cron(f"{field} * * * * *").seconds == allowed


def test_month_and_day_names_are_english_prefixes_in_any_case():
    schedule = parse_cron("0 0 0 * JAN,ju,December sun,T,Thu-Sat")
    assert schedule.months == (1, 6, 12)  # "ju": the first month it begins, June
    assert schedule.days_of_week == (0, 2, 4, 5, 6)  # "T": Tuesday
    assert parse_cron("0 0 0 * * Fri-Mon").days_of_week == (1, 2, 3, 4, 5)  # swapped


def test_fields_may_be_separated_by_several_spaces():
    assert parse_cron("  0  */5 * * * * ").minutes == tuple(range(0, 60, 5))


@pytest.mark.parametrize("expression, reason", [
    ("* * * *", "4 fields"),
    ("0 0 * * * * *", "7 fields"),
    ("60 * * * * *", "second field '60': 60 is outside 0-59"),
    ("0 0 24 * * *", "hour field '24'"),
    ("0 0 0 0 * *", "day field '0'"),
    ("0 0 0 * 13 *", "month field '13'"),
    ("0 0 0 * * 7", "day-of-week field '7'"),  # 0-6 only; 7 is not Sunday here
    ("0 0 0 * Foo *", "'Foo' is not a number between 1 and 12 (or a name: January"),
    ("0 x * * * *", "minute field 'x'"),
    ("1, * * * * *", "an empty list item"),
    ("*/x * * * * *", "the step 'x' is not a whole number"),
    ("*-5 * * * * *", "'*' is not a number"),
    ("1-2-3 * * * * *", "'2-3' is not a number"),
])
def test_invalid_expressions_say_what_is_wrong(expression, reason):
    with pytest.raises(ScheduleError, match="not a valid NCRONTAB expression") as error:
        parse_schedule(expression)
    assert reason in str(error.value)


def test_a_schedule_that_never_fires_answers_never():
    assert parse_cron("0 0 0 30 2 *").next_after(at(2024, 1, 1)) == NEVER


def test_times_are_utc():
    schedule = parse_cron("0 0 9 * * *")
    two_hours_east = timezone(timedelta(hours=2))
    assert schedule.next_after(datetime(2024, 5, 1, 10, 0, tzinfo=two_hours_east)) == \
        at(2024, 5, 1, 9)  # 08:00 UTC
    assert schedule.next_after(datetime(2024, 5, 1, 10, 0)) == at(2024, 5, 2, 9)  # naive: UTC


def test_a_timespan_is_an_interval_from_the_last_run():
    schedule = parse_schedule("00:05:00")
    assert isinstance(schedule, IntervalSchedule) and not schedule.adjust_for_dst
    assert schedule.next_after(at(2024, 5, 1, 12, 0, 1)) == at(2024, 5, 1, 12, 5, 1)
    assert parse_schedule("1.00:00:00").next_after(at(2024, 5, 1)) == at(2024, 5, 2)
    assert str(schedule) == "Constant: 00:05:00"
    cron = parse_schedule("0 */5 * * * *")
    assert isinstance(cron, CronSchedule) and cron.adjust_for_dst
    assert str(cron) == "Cron: '0 */5 * * * *'"


@pytest.mark.parametrize("expression, reason", [
    ("5", "TimeSpan of that many days"),  # .NET would read five days
    ("24:00:00", "hours must be 0-23"),  # .NET would read 24 days
    ("00:00:00", "longer than zero"),
    ("1:2:3:4", "neither an NCRONTAB expression nor a TimeSpan"),
])
def test_timespans_devhost_refuses_say_what_to_write(expression, reason):
    with pytest.raises(ScheduleError, match=reason):
        parse_schedule(expression)


@pytest.mark.parametrize("expression, often", [
    ("*/10 * * * * *", True),
    ("*/1 * * * * *", True),
    ("0 * * * * *", False),
    ("*/10 */5 * * * *", False),  # a restricted minute field: the host keeps monitoring
    ("0 */5 * * * *", False),
    ("* * * * *", False),  # five fields: at most once a minute
    ("00:00:30", True),
    ("00:01:00", False),
])
def test_schedules_firing_more_than_once_a_minute_are_recognised(expression, often):
    assert parse_schedule(expression).runs_more_than_once_a_minute(at(2024, 5, 1, 12, 0, 0)) \
        is often
